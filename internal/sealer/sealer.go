package sealer

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// KeySize is the length of a master key in bytes.
const KeySize = 32

const (
	version     = 1
	fpLen       = 8
	nonceLen    = 12
	headerLen   = 1 + fpLen + nonceLen
	tagLen      = 16
	minSealed   = headerLen + tagLen
	maxKeys     = 16   // the current key and up to 15 previous ones
	maxPlainLen = 4096 // far above any secret; bounds what Seal accepts
)

var (
	// ErrUnknownKey: the secret was sealed under a master key this Sealer
	// does not hold (neither the current nor a previous one).
	ErrUnknownKey = errors.New("sealed under a master key this server does not have")
	// ErrCorrupt: the sealed secret does not decrypt — altered, truncated,
	// or sealed for another key id.
	ErrCorrupt = errors.New("sealed secret does not decrypt (altered, or sealed for another key)")
)

// Fingerprint names a master key without revealing it: the first 8 bytes of
// its SHA-256.
type Fingerprint [fpLen]byte

func (f Fingerprint) String() string { return hex.EncodeToString(f[:]) }

type masterKey struct {
	fp   Fingerprint
	aead cipher.AEAD
}

// Sealer seals under its current master key and opens under the current or
// any previous one. It is safe for concurrent use.
type Sealer struct {
	current masterKey
	all     []masterKey // current first
}

// ParseKey decodes a master key written as base64 (standard or URL
// alphabet, padded or not) or hex, ignoring surrounding white space. It
// refuses anything that does not decode to exactly KeySize bytes; its errors
// never contain the text. Zero the result once it has been handed to New.
func ParseKey(text string) ([]byte, error) {
	text = strings.TrimSpace(text)
	if text == "" {
		return nil, fmt.Errorf("master key is empty; want %d random bytes encoded as base64 or hex, e.g. openssl rand -base64 %d", KeySize, KeySize)
	}
	decoders := []func(string) ([]byte, error){
		hex.DecodeString,
		base64.StdEncoding.DecodeString,
		base64.RawStdEncoding.DecodeString,
		base64.URLEncoding.DecodeString,
		base64.RawURLEncoding.DecodeString,
	}
	decodedLen := -1
	for _, dec := range decoders {
		b, err := dec(text)
		if err != nil {
			continue
		}
		if len(b) == KeySize {
			return b, nil
		}
		if decodedLen < 0 {
			decodedLen = len(b)
		}
		clear(b)
	}
	if decodedLen >= 0 {
		return nil, fmt.Errorf("master key decodes to %d bytes; want exactly %d random bytes (e.g. openssl rand -base64 %d)", decodedLen, KeySize, KeySize)
	}
	return nil, fmt.Errorf("master key (%d characters) is neither base64 nor hex; want %d random bytes encoded, e.g. openssl rand -base64 %d", len(text), KeySize, KeySize)
}

// New returns a Sealer that seals under current and opens what current or
// any of previous sealed. Each key must be exactly KeySize bytes; New keeps
// no reference to the slices, so the caller may zero them afterwards. A
// previous key equal to current, or listed twice, is ignored.
func New(current []byte, previous ...[]byte) (*Sealer, error) {
	if len(previous)+1 > maxKeys {
		return nil, fmt.Errorf("%d master keys: at most %d (the current one and %d previous)", len(previous)+1, maxKeys, maxKeys-1)
	}
	s := &Sealer{}
	for i, raw := range append([][]byte{current}, previous...) {
		what := "current master key"
		if i > 0 {
			what = fmt.Sprintf("previous master key %d", i)
		}
		if len(raw) != KeySize {
			return nil, fmt.Errorf("%s: %d bytes; want exactly %d", what, len(raw), KeySize)
		}
		mk, err := newMasterKey(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		if s.find(mk.fp) != nil {
			continue
		}
		s.all = append(s.all, mk)
	}
	s.current = s.all[0]
	return s, nil
}

func newMasterKey(raw []byte) (masterKey, error) {
	sum := sha256.Sum256(raw)
	var mk masterKey
	copy(mk.fp[:], sum[:fpLen])
	block, err := aes.NewCipher(raw)
	if err != nil {
		return masterKey{}, err
	}
	if mk.aead, err = cipher.NewGCM(block); err != nil {
		return masterKey{}, err
	}
	return mk, nil
}

func (s *Sealer) find(fp Fingerprint) *masterKey {
	for i := range s.all {
		if s.all[i].fp == fp {
			return &s.all[i]
		}
	}
	return nil
}

// Fingerprint names the current master key.
func (s *Sealer) Fingerprint() Fingerprint { return s.current.fp }

// Seal encrypts secret for the key keyID under the current master key, with
// a fresh random nonce.
func (s *Sealer) Seal(keyID string, secret []byte) ([]byte, error) {
	if len(secret) == 0 || len(secret) > maxPlainLen {
		return nil, fmt.Errorf("seal: secret of %d bytes; want 1 to %d", len(secret), maxPlainLen)
	}
	out := make([]byte, headerLen, headerLen+len(secret)+tagLen)
	out[0] = version
	copy(out[1:], s.current.fp[:])
	nonce := out[1+fpLen : headerLen]
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal: read random nonce: %w", err)
	}
	return s.current.aead.Seal(out, nonce, secret, []byte(keyID)), nil
}

// Open decrypts what Seal returned for keyID, under whichever of the
// Sealer's master keys sealed it. The caller should zero the result once
// used. Errors: ErrUnknownKey, ErrCorrupt.
func (s *Sealer) Open(keyID string, sealed []byte) ([]byte, error) {
	fp, err := FingerprintOf(sealed)
	if err != nil {
		return nil, err
	}
	mk := s.find(fp)
	if mk == nil {
		return nil, fmt.Errorf("%w (fingerprint %s)", ErrUnknownKey, fp)
	}
	plain, err := mk.aead.Open(nil, sealed[1+fpLen:headerLen], sealed[headerLen:], []byte(keyID))
	if err != nil {
		return nil, ErrCorrupt
	}
	return plain, nil
}

// Current reports whether sealed was sealed under the current master key
// (and so needs no re-sealing in a rotation).
func (s *Sealer) Current(sealed []byte) bool {
	fp, err := FingerprintOf(sealed)
	return err == nil && fp == s.current.fp
}

// Reseal opens sealed and seals it again under the current master key, with a
// fresh nonce. The plaintext is zeroed before Reseal returns.
func (s *Sealer) Reseal(keyID string, sealed []byte) ([]byte, error) {
	plain, err := s.Open(keyID, sealed)
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	return s.Seal(keyID, plain)
}

// FingerprintOf returns the fingerprint of the master key that sealed
// sealed, or ErrCorrupt if sealed is not in this package's format.
func FingerprintOf(sealed []byte) (Fingerprint, error) {
	var fp Fingerprint
	if len(sealed) < minSealed || sealed[0] != version {
		return fp, ErrCorrupt
	}
	copy(fp[:], sealed[1:1+fpLen])
	return fp, nil
}
