package keys

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"time"
)

const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// IDPrefix starts every key id. Secrets start with "kw_", so an id can never
// be mistaken for a secret or the other way round.
const IDPrefix = "key_"

// NewID returns "key_" and 26 Crockford base32 characters: 48 bits of
// milliseconds then 80 random bits, so ids sort by creation time and page
// cursors stay stable while keys are added.
func NewID(now time.Time) (string, error) {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixMilli())<<16)
	if _, err := rand.Read(b[6:]); err != nil {
		return "", fmt.Errorf("new key id: %w", err)
	}
	// 128 bits in 26 base32 digits: the first digit carries the top 3 bits.
	hi, lo := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	out := make([]byte, 26)
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return IDPrefix + string(out), nil
}
