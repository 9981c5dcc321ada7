package keymat

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"hash/crc32"
	"strings"
	"testing"
)

// The seed corpora are in testdata/fuzz/<target>; `make fuzz` runs each
// target for longer.

// FuzzParse: Parse never panics; what it accepts is exactly a secret of the
// documented shape whose checksum holds, and it gives back the same text;
// what it refuses is ErrMalformed itself, which carries none of the input.
// The allocation-free CRC32 and SHA-256 helpers agree with the standard
// library on any input.
func FuzzParse(f *testing.F) {
	f.Add("kw_live_")
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := crcIEEE(s), crc32.ChecksumIEEE([]byte(s)); got != want {
			t.Fatalf("crcIEEE = %08x, crc32.ChecksumIEEE = %08x", got, want)
		}
		if got, want := Sum(s), sha256.Sum256([]byte(s)); got != want {
			t.Fatal("Sum differs from sha256.Sum256")
		}
		p, err := Parse(s)
		if err != nil {
			if err != ErrMalformed { // the sentinel itself: no wrapping that could quote the input
				t.Fatalf("Parse refused with %v, want ErrMalformed itself", err)
			}
			return
		}
		if p.String() != s {
			t.Fatalf("Parse(%q).String() = %q", s, p.String())
		}
		if loc := Pattern.FindStringIndex(s); loc == nil || loc[0] != 0 || loc[1] != len(s) {
			t.Fatalf("accepted %q, which the documented Pattern does not match whole", s)
		}
		head, tail := s[:len(s)-checksumLen], s[len(s)-checksumLen:]
		if sum := checksum(head); string(sum[:]) != tail {
			t.Fatalf("accepted %q with checksum %q, want %q", s, tail, sum[:])
		}
		env := p.Environment()
		if !ValidEnvironment(env) || !strings.HasPrefix(s, Issuer+"_"+env+"_") || len(s) != len(Issuer)+len(env)+2+bodyLen+checksumLen {
			t.Fatalf("accepted %q with environment %q", s, env)
		}
		if !strings.HasPrefix(s, p.Start()) || !strings.HasSuffix(s, p.Last4()) || len(p.Last4()) != 4 {
			t.Fatalf("Start %q / Last4 %q are not the ends of %q", p.Start(), p.Last4(), s)
		}
		if h := sha256.Sum256([]byte(s)); !bytes.Equal(p.Hash(), h[:]) || p.Sum() != h {
			t.Fatal("Hash/Sum are not SHA-256 of the secret")
		}
	})
}

// FuzzGenerate: for any random bytes and environment, Generate either
// refuses with an error naming the problem, or returns a secret that Parse
// accepts unchanged; and changing any one byte of that secret to any other
// byte makes Parse refuse it. (A CRC32 detects every error burst of up to
// 32 bits, and the base62 checksum is injective, so this holds for every
// substitution, not just with high probability. Insertions and deletions
// are not asserted: for those a CRC only gives 2^-32 odds, which a long
// fuzzing run would eventually hit.)
func FuzzGenerate(f *testing.F) {
	f.Add(make([]byte, 32), "live", uint16(10), byte('a'))
	f.Fuzz(func(t *testing.T, random []byte, env string, pos uint16, c byte) {
		s, err := generate(bytes.NewReader(random), env)
		switch {
		case !ValidEnvironment(env):
			if err == nil || !strings.Contains(err.Error(), "environment") {
				t.Fatalf("Generate(%q) = %v, want an error naming the environment", env, err)
			}
			return
		case len(random) < 32:
			if err == nil {
				t.Fatalf("Generate succeeded on %d random bytes", len(random))
			}
			return
		case err != nil:
			t.Fatalf("Generate(%q): %v", env, err)
		}
		g := s.String()
		p, err := Parse(g)
		if err != nil {
			t.Fatalf("Parse(Generate(%q)) = %v: %q", env, err, g)
		}
		if p != s || p.Environment() != env || !strings.HasPrefix(g, Issuer+"_"+env+"_") {
			t.Fatalf("parsed %+v, generated %+v", p, s)
		}
		i := int(pos) % len(g)
		if g[i] == c {
			return
		}
		b := []byte(g)
		b[i] = c
		if _, err := Parse(string(b)); !errors.Is(err, ErrMalformed) {
			t.Fatalf("changing byte %d of %q to %q: Parse = %v, want ErrMalformed", i, g, c, err)
		}
	})
}
