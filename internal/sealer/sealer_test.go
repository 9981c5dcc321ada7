package sealer

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func randomKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func newSealer(t *testing.T, current []byte, previous ...[]byte) *Sealer {
	t.Helper()
	s, err := New(current, previous...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const secret = "kw_live_0123456789abcdefghijABCDEFGHIJklmnopqrstuvwxyzAB"

func TestRoundTrip(t *testing.T) {
	s := newSealer(t, randomKey(t))
	sealed, err := s.Seal("key_1", []byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte(secret)) || bytes.Contains(sealed, []byte(secret[10:30])) {
		t.Fatal("the sealed form contains the secret")
	}
	if len(sealed) != 1+8+12+len(secret)+16 || sealed[0] != 1 {
		t.Fatalf("sealed: %d bytes, version %d", len(sealed), sealed[0])
	}
	got, err := s.Open("key_1", sealed)
	if err != nil || string(got) != secret {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if !s.Current(sealed) {
		t.Fatal("Current = false for a secret sealed under the current key")
	}
}

func TestOpenRefuses(t *testing.T) {
	s := newSealer(t, randomKey(t))
	sealed, err := s.Seal("key_1", []byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte {
		c := bytes.Clone(sealed)
		c[i] ^= 1
		return c
	}
	for _, tc := range []struct {
		name   string
		keyID  string
		sealed []byte
		want   error
	}{
		{"refused/other-key-id", "key_2", sealed, ErrCorrupt},
		{"refused/empty-key-id", "", sealed, ErrCorrupt},
		{"refused/tampered-ciphertext", "key_1", flip(21), ErrCorrupt},
		{"refused/tampered-tag", "key_1", flip(len(sealed) - 1), ErrCorrupt},
		{"refused/tampered-nonce", "key_1", flip(10), ErrCorrupt},
		{"refused/tampered-version", "key_1", flip(0), ErrCorrupt},
		{"refused/tampered-fingerprint", "key_1", flip(1), ErrUnknownKey},
		{"refused/truncated", "key_1", sealed[:len(sealed)-1], ErrCorrupt},
		{"refused/short", "key_1", sealed[:20], ErrCorrupt},
		{"refused/empty", "key_1", nil, ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Open(tc.keyID, tc.sealed)
			if !errors.Is(err, tc.want) || got != nil {
				t.Fatalf("Open = %q, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestFreshNonce(t *testing.T) {
	s := newSealer(t, randomKey(t))
	seen := map[string]bool{}
	for range 100 {
		sealed, err := s.Seal("key_1", []byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		nonce := string(sealed[9:21])
		if seen[nonce] {
			t.Fatal("a nonce was used twice")
		}
		seen[nonce] = true
	}
}

func TestRotation(t *testing.T) {
	a, b, c := randomKey(t), randomKey(t), randomKey(t)
	old := newSealer(t, a)
	sealedA, err := old.Seal("key_1", []byte(secret))
	if err != nil {
		t.Fatal(err)
	}

	t.Run("ok/previous-key-opens", func(t *testing.T) {
		s := newSealer(t, b, c, a) // the fingerprint picks a, not the first previous key
		got, err := s.Open("key_1", sealedA)
		if err != nil || string(got) != secret {
			t.Fatalf("Open = %q, %v", got, err)
		}
		if s.Current(sealedA) {
			t.Fatal("Current = true for a secret sealed under a previous key")
		}
		resealed, err := s.Reseal("key_1", sealedA)
		if err != nil {
			t.Fatal(err)
		}
		if !s.Current(resealed) {
			t.Fatal("Reseal did not seal under the current key")
		}
		if _, err := newSealer(t, b).Open("key_1", resealed); err != nil {
			t.Fatalf("the new key alone cannot open what Reseal made: %v", err)
		}
		if _, err := old.Open("key_1", resealed); !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("the old key opened what Reseal made: %v", err)
		}
	})
	t.Run("refused/key-not-held", func(t *testing.T) {
		_, err := newSealer(t, b, c).Open("key_1", sealedA)
		if !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("Open = %v, want ErrUnknownKey", err)
		}
		if !strings.Contains(err.Error(), old.Fingerprint().String()) {
			t.Fatalf("error %q does not name the fingerprint %s", err, old.Fingerprint())
		}
	})
	t.Run("refused/same-fingerprint-wrong-key", func(t *testing.T) {
		// A sealed secret whose fingerprint was rewritten to another key's
		// does not decrypt under that key.
		s := newSealer(t, b)
		forged := bytes.Clone(sealedA)
		fp := s.Fingerprint()
		copy(forged[1:9], fp[:])
		if _, err := s.Open("key_1", forged); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Open = %v, want ErrCorrupt", err)
		}
	})
	t.Run("ok/duplicates-ignored", func(t *testing.T) {
		s := newSealer(t, a, a, b, b)
		if len(s.all) != 2 || s.Fingerprint() != old.Fingerprint() {
			t.Fatalf("keys held: %d", len(s.all))
		}
	})
}

func TestParseKey(t *testing.T) {
	raw := randomKey(t)
	for _, tc := range []struct{ name, text string }{
		{"ok/hex", hex.EncodeToString(raw)},
		{"ok/hex-upper", strings.ToUpper(hex.EncodeToString(raw))},
		{"ok/base64-std", base64.StdEncoding.EncodeToString(raw)},
		{"ok/base64-std-raw", base64.RawStdEncoding.EncodeToString(raw)},
		{"ok/base64-url", base64.URLEncoding.EncodeToString(raw)},
		{"ok/base64-url-raw", base64.RawURLEncoding.EncodeToString(raw)},
		{"ok/trailing-newline", base64.StdEncoding.EncodeToString(raw) + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseKey(tc.text)
			if err != nil || !bytes.Equal(got, raw) {
				t.Fatalf("ParseKey = %x, %v", got, err)
			}
		})
	}
	for _, tc := range []struct{ name, text string }{
		{"refused/empty", "  \n"},
		{"refused/16-bytes-base64", base64.StdEncoding.EncodeToString(raw[:16])},
		{"refused/31-bytes-hex", hex.EncodeToString(raw[:31])},
		{"refused/33-bytes-base64", base64.StdEncoding.EncodeToString(append(bytes.Clone(raw), 7))},
		{"refused/64-bytes-hex", hex.EncodeToString(append(bytes.Clone(raw), raw...))},
		{"refused/passphrase", "correct horse battery staple, a passphrase!"},
		{"refused/raw-bytes", string(raw)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseKey(tc.text)
			if err == nil || got != nil {
				t.Fatalf("ParseKey accepted it: %x", got)
			}
			msg := err.Error()
			trimmed := strings.TrimSpace(tc.text)
			if trimmed != "" && (strings.Contains(msg, trimmed) || strings.Contains(msg, trimmed[:min(8, len(trimmed))])) {
				t.Fatalf("the error echoes the value: %q", msg)
			}
			if !strings.Contains(msg, "32") {
				t.Fatalf("the error %q does not say what is wanted", msg)
			}
		})
	}
}

func TestNewRefusesBadSizes(t *testing.T) {
	good := randomKey(t)
	for _, tc := range []struct {
		name     string
		current  []byte
		previous [][]byte
	}{
		{"refused/nil", nil, nil},
		{"refused/short-current", good[:16], nil},
		{"refused/long-current", append(bytes.Clone(good), 0), nil},
		{"refused/short-previous", good, [][]byte{good[:24]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.current, tc.previous...); err == nil || !strings.Contains(err.Error(), "want exactly 32") {
				t.Fatalf("New = %v", err)
			}
		})
	}
	// New keeps no reference to the caller's slice: zeroing it afterwards
	// changes nothing.
	k := bytes.Clone(good)
	s := newSealer(t, k)
	sealed, _ := s.Seal("key_1", []byte(secret))
	clear(k)
	if got, err := s.Open("key_1", sealed); err != nil || string(got) != secret {
		t.Fatalf("after zeroing the caller's key: %q, %v", got, err)
	}
}

func TestSealRefusesEmpty(t *testing.T) {
	if _, err := newSealer(t, randomKey(t)).Seal("key_1", nil); err == nil {
		t.Fatal("sealed an empty secret")
	}
}
