// Package sealer encrypts the secrets of recoverable keys under the server's
// master key, so that RevealKey can show them again.
//
// A master key is 32 random bytes, written as base64 (standard or URL
// alphabet, padded or not) or hex. A sealed secret is
//
//	version (1 byte, 1) | fingerprint (8) | nonce (12) | AES-256-GCM ciphertext and tag
//
// The fingerprint is the first 8 bytes of SHA-256 of the master key that
// sealed it, so a Sealer holding several keys (the current one and those it
// replaces during a rotation) knows which one opens it; the nonce is fresh
// from crypto/rand for every seal; the key's id is the associated data, so a
// sealed secret copied to another key's row does not open.
//
// Nothing here logs, and no error holds a master key or a secret.
package sealer
