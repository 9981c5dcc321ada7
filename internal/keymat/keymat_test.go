package keymat

import (
	"bytes"
	"crypto/rand"
	"errors"
	"hash/crc32"
	"strings"
	"testing"
)

func TestGenerateParseRoundTrip(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 200; i++ {
		s, err := Generate("live")
		if err != nil {
			t.Fatal(err)
		}
		if len(s.String()) != len("kw_live_")+bodyLen+checksumLen {
			t.Fatalf("length %d", len(s.String()))
		}
		if !strings.HasPrefix(s.String(), "kw_live_") || !Pattern.MatchString(s.String()) {
			t.Fatalf("shape: %q", s.String())
		}
		p, err := Parse(s.String())
		if err != nil {
			t.Fatalf("parse own secret: %v", err)
		}
		if p.Environment() != "live" || !bytes.Equal(p.Hash(), s.Hash()) {
			t.Fatal("parsed secret differs")
		}
		if !strings.HasPrefix(s.String(), s.Start()) || !strings.HasSuffix(s.String(), s.Last4()) {
			t.Fatal("start/last4 not parts of the secret")
		}
		if seen[s.String()] {
			t.Fatal("duplicate secret")
		}
		seen[s.String()] = true
	}
}

func TestBodyCarries256Bits(t *testing.T) {
	// The largest 256-bit value must fit the body without truncation.
	max := bytes.Repeat([]byte{0xff}, 32)
	s, err := generate(bytes.NewReader(max), "test")
	if err != nil {
		t.Fatal(err)
	}
	zero, _ := generate(bytes.NewReader(make([]byte, 32)), "test")
	if s.String() == zero.String() {
		t.Fatal("all-ones and all-zeros encode the same")
	}
	if _, err := Parse(s.String()); err != nil {
		t.Fatalf("max value: %v", err)
	}
}

func TestParseRefuses(t *testing.T) {
	good, _ := Generate("test")
	g := good.String()
	flip := func(i int) string {
		b := []byte(g)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	for name, in := range map[string]string{
		"malformed/empty":         "",
		"malformed/other-issuer":  "sk" + g[2:],
		"malformed/truncated":     g[:len(g)-1],
		"malformed/extended":      g + "a",
		"malformed/typo-in-body":  flip(len("kw_test_") + 5),
		"malformed/typo-checksum": flip(len(g) - 1),
		"malformed/bad-env":       strings.Replace(g, "kw_test_", "kw_TEST_", 1),
		"malformed/non-base62":    g[:len(g)-8] + "-" + g[len(g)-7:],
		"malformed/too-long":      "kw_" + strings.Repeat("a", 200),
		"malformed/no-separator":  "kw_testabc",
		"malformed/only-prefix":   "kw_test_",
		"malformed/unicode":       "kw_tést_" + g[8:],
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse(in); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse(%q) = %v, want ErrMalformed", in, err)
			}
		})
	}
}

func TestGenerateRefusesBadEnvironment(t *testing.T) {
	for _, env := range []string{"", "Live", "has_underscore", "0start", strings.Repeat("a", 17)} {
		if _, err := Generate(env); err == nil {
			t.Errorf("Generate(%q) succeeded", env)
		}
	}
}

func TestGenerateFailsOnShortRandom(t *testing.T) {
	if _, err := generate(bytes.NewReader(make([]byte, 5)), "live"); err == nil {
		t.Fatal("want error when the random source runs dry")
	}
	_ = rand.Reader
}

func TestChecksumIsCRC32IEEE(t *testing.T) {
	// Scanners outside Keyward recompute the checksum with a stock CRC32.
	for _, s := range []string{"", "kw_live_abc", strings.Repeat("z", 200)} {
		if got, want := crcIEEE(s), crc32.ChecksumIEEE([]byte(s)); got != want {
			t.Fatalf("crcIEEE(%q) = %x, want %x", s, got, want)
		}
	}
}
