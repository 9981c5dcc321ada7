package keyservice

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/keys"
)

// FuzzPageToken covers both kinds of page token, ListKeys' and
// ListAuditEvents'. Decoding any token never panics, and either yields a
// cursor of the right shape or refuses with an InvalidArgument naming
// page_token. A token encoded for a query decodes to its cursor with that
// query, and is refused with a query one byte different. A token whose
// version or checksum part is changed is refused.
//
// Tokens carry no MAC: changing the cursor part moves the cursor (to an id
// or sequence the client could have reached by paging anyway), which the
// query binding and the admin-only API make harmless; so only the framing
// is asserted tamper-evident.
func FuzzPageToken(f *testing.F) {
	f.Add("", "", "01J0000000000000000000000A", int64(1), uint8(0), byte('x'))
	f.Fuzz(func(t *testing.T, token, query, lastID string, seq int64, pos uint8, c byte) {
		// Arbitrary tokens.
		if id, err := decodePageToken(token, query); err != nil {
			checkInvalid(t, err, "page_token")
		} else if !strings.HasPrefix(id, keys.IDPrefix) || len(id) > maxIDLen {
			t.Fatalf("decodePageToken(%q) = cursor %q", token, id)
		}
		if s, err := decodeAuditToken(token, query); err != nil {
			checkInvalid(t, err, "page_token")
		} else if s < 1 {
			t.Fatalf("decodeAuditToken(%q) = sequence %d", token, s)
		}

		other := otherQuery(query)

		// ListKeys tokens: round trip, query binding, framing.
		if id := keys.IDPrefix + lastID; len(id) <= maxIDLen {
			tok := encodePageToken(id, query)
			if got, err := decodePageToken(tok, query); err != nil || got != id {
				t.Fatalf("round trip of %q: %q, %v", id, got, err)
			}
			if _, err := decodePageToken(tok, other); err == nil {
				t.Fatalf("token for query %q accepted for %q", query, other)
			} else {
				checkInvalid(t, err, "page_token")
			}
			framing := len("v1.") + 8 + 1
			if _, err := decodePageToken(tamper(t, tok, int(pos)%framing, c), query); err != nil {
				checkInvalid(t, err, "page_token")
			} else if raw, _ := base64.RawURLEncoding.DecodeString(tok); raw[int(pos)%framing] != c {
				t.Fatalf("token with byte %d changed to %q accepted", int(pos)%framing, c)
			}
		}

		// Audit tokens: the same for sequences.
		tok := encodeAuditToken(seq, query)
		got, err := decodeAuditToken(tok, query)
		switch {
		case seq < 1:
			if err == nil {
				t.Fatalf("audit token for sequence %d accepted", seq)
			}
			checkInvalid(t, err, "page_token")
		case err != nil || got != seq:
			t.Fatalf("round trip of sequence %d: %d, %v", seq, got, err)
		}
		if _, err := decodeAuditToken(tok, other); err == nil {
			t.Fatalf("audit token for key_id %q accepted for %q", query, other)
		} else {
			checkInvalid(t, err, "page_token")
		}
		framing := len("a1.") + 8 + 1
		if _, err := decodeAuditToken(tamper(t, tok, int(pos)%framing, c), query); err != nil {
			checkInvalid(t, err, "page_token")
		} else if raw, _ := base64.RawURLEncoding.DecodeString(tok); raw[int(pos)%framing] != c {
			t.Fatalf("audit token with byte %d changed to %q accepted", int(pos)%framing, c)
		}
	})
}

// otherQuery returns query with one bit changed, which a CRC32 always
// tells apart.
func otherQuery(query string) string {
	if query == "" {
		return "a"
	}
	b := []byte(query)
	b[0] ^= 1
	return string(b)
}

// tamper returns token with byte i of its decoded text set to c.
func tamper(t *testing.T, token string, i int, c byte) string {
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		t.Fatalf("own token %q: %v", token, err)
	}
	raw[i] = c
	return base64.RawURLEncoding.EncodeToString(raw)
}
