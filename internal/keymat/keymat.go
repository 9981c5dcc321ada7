// Package keymat generates, parses and hashes Keyward secrets.
//
// A secret is "kw_{environment}_{body}{checksum}": body is 43 base62
// characters encoding 256 bits from crypto/rand, checksum is the CRC32 of
// everything before it in 6 base62 characters. The checksum lets a mistyped
// or truncated key be refused before any lookup, and with the fixed prefix it
// lets secret scanners recognise our keys (see Pattern).
package keymat

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/big"
	"regexp"
	"strings"
)

const (
	// Issuer is the first part of every secret's prefix.
	Issuer       = "kw"
	bodyLen      = 43 // ceil(256 / log2(62))
	checksumLen  = 6  // ceil(32 / log2(62))
	visibleLen   = 6  // body characters kept in clear for display and search (~36 of 256 bits)
	maxSecretLen = 128
	alphabet     = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// Pattern matches Keyward secrets, for secret scanners.
var Pattern = regexp.MustCompile(`\bkw_[a-z][a-z0-9]{0,15}_[0-9A-Za-z]{49}\b`)

var envPattern = regexp.MustCompile(`^[a-z][a-z0-9]{0,15}$`)

// ErrMalformed is returned by Parse for anything that is not a well-formed secret.
var ErrMalformed = errors.New("malformed key")

// Secret is a parsed, checksum-verified secret. Its String is the secret
// itself, so it must never be logged.
type Secret struct {
	full string
	env  string
}

// ValidEnvironment reports whether env can be part of a prefix.
func ValidEnvironment(env string) bool { return envPattern.MatchString(env) }

// Generate returns a new secret for env from crypto/rand.
func Generate(env string) (Secret, error) { return generate(rand.Reader, env) }

func generate(r io.Reader, env string) (Secret, error) {
	if !ValidEnvironment(env) {
		return Secret{}, fmt.Errorf("environment %q: want 1-16 lowercase letters or digits, starting with a letter", env)
	}
	var raw [32]byte
	if _, err := io.ReadFull(r, raw[:]); err != nil {
		return Secret{}, fmt.Errorf("read random bytes: %w", err)
	}
	head := Issuer + "_" + env + "_" + base62(new(big.Int).SetBytes(raw[:]), bodyLen)
	sum := checksum(head)
	return Secret{full: head + string(sum[:]), env: env}, nil
}

// Parse checks a presented secret's shape and checksum without any lookup.
func Parse(s string) (Secret, error) {
	if len(s) > maxSecretLen || !strings.HasPrefix(s, Issuer+"_") {
		return Secret{}, ErrMalformed
	}
	i := strings.LastIndexByte(s, '_')
	if i <= len(Issuer) {
		return Secret{}, ErrMalformed
	}
	env, tail := s[len(Issuer)+1:i], s[i+1:]
	if !ValidEnvironment(env) || len(tail) != bodyLen+checksumLen {
		return Secret{}, ErrMalformed
	}
	for j := 0; j < len(tail); j++ {
		if strings.IndexByte(alphabet, tail[j]) < 0 {
			return Secret{}, ErrMalformed
		}
	}
	sum := checksum(s[:len(s)-checksumLen])
	if string(sum[:]) != s[len(s)-checksumLen:] { // compiles to a comparison, no allocation
		return Secret{}, ErrMalformed
	}
	return Secret{full: s, env: env}, nil
}

// String returns the full secret. Call it only to hand the secret to its owner.
func (s Secret) String() string { return s.full }

// Environment is the environment named in the prefix.
func (s Secret) Environment() string { return s.env }

// Hash is what the store keeps: SHA-256 of the whole secret.
func (s Secret) Hash() []byte { return Hash(s.full) }

// Sum is Hash as an array, for the validation path, where it stays on the stack.
func (s Secret) Sum() [32]byte { return Sum(s.full) }

// Start is the visible beginning kept for display and prefix search.
func (s Secret) Start() string {
	return s.full[:len(Issuer)+1+len(s.env)+1+visibleLen]
}

// Last4 is the visible end kept for display.
func (s Secret) Last4() string { return s.full[len(s.full)-4:] }

// Hash returns SHA-256 of any presented credential. Keyward secrets carry 256
// random bits, so a fast hash is enough: there is nothing to brute-force.
func Hash(secret string) []byte {
	h := Sum(secret)
	return h[:]
}

// Sum is Hash without allocating for secrets of usual length.
func Sum(secret string) [32]byte {
	var buf [maxSecretLen]byte
	if len(secret) <= len(buf) {
		return sha256.Sum256(append(buf[:0], secret...))
	}
	return sha256.Sum256([]byte(secret))
}

// checksum is the CRC32 of head in checksumLen base62 digits. It runs on
// every Validate, so it avoids big.Int and allocations.
func checksum(head string) [checksumLen]byte {
	var out [checksumLen]byte
	n := crcIEEE(head)
	for i := checksumLen - 1; i >= 0; i-- {
		out[i] = alphabet[n%62]
		n /= 62
	}
	return out
}

// ieeeTable is constant once built; crcIEEE walks it over a string, which
// (unlike crc32.ChecksumIEEE on a []byte) never allocates.
var ieeeTable = crc32.MakeTable(crc32.IEEE)

func crcIEEE(s string) uint32 {
	crc := ^uint32(0)
	for i := 0; i < len(s); i++ {
		crc = ieeeTable[byte(crc)^s[i]] ^ crc>>8
	}
	return ^crc
}

// base62 encodes n in exactly width digits, zero-padded on the left.
func base62(n *big.Int, width int) string {
	out := make([]byte, width)
	base := big.NewInt(62)
	rem := new(big.Int)
	for i := width - 1; i >= 0; i-- {
		n.DivMod(n, base, rem)
		out[i] = alphabet[rem.Int64()]
	}
	return string(out)
}
