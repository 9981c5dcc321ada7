package keyservice

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/keys"
)

// maxErrorLen bounds the message of any error a request can provoke: it
// is echoed to the client, and must not grow with the input.
const maxErrorLen = 1024

// checkInvalid fails t unless err is an InvalidArgumentError naming field,
// with a message that is valid UTF-8 and bounded.
func checkInvalid(t *testing.T, err error, field string) {
	t.Helper()
	var inv *keys.InvalidArgumentError
	if !errors.As(err, &inv) || inv.Field != field {
		t.Fatalf("error %v (%T), want InvalidArgument naming %s", err, err, field)
	}
	if msg := err.Error(); !utf8.ValidString(msg) || len(msg) > maxErrorLen {
		t.Fatalf("error message invalid UTF-8 or %d bytes long: %q", len(msg), msg)
	}
}

// FuzzUpdateMask: maskPaths never panics; it either accepts, returning only
// mutable fields (and environment or recoverable, which UpdateKey accepts
// when unchanged), every mutable field named, or refuses with an
// InvalidArgument naming update_mask. Without a mask it returns exactly
// the mutable fields the key populates. Input: mask paths separated by
// newlines ("" for no mask); set picks the populated fields, bit i for
// mutable[i].
func FuzzUpdateMask(f *testing.F) {
	f.Add("display_name\nscopes", uint8(0))
	f.Fuzz(func(t *testing.T, paths string, set uint8) {
		req := &keywardv1.UpdateKeyRequest{Key: populated(set)}
		if paths != "" {
			req.UpdateMask = &fieldmaskpb.FieldMask{Paths: strings.Split(paths, "\n")}
		}
		out, err := maskPaths(req)
		if err != nil {
			checkInvalid(t, err, "update_mask")
			if out != nil {
				t.Fatalf("refused, yet returned %v", out)
			}
			if paths == "" && set != 0 {
				t.Fatalf("refused a key populating fields %08b without a mask: %v", set, err)
			}
			return
		}
		for _, p := range out {
			if !contains(mutable, p) && p != "environment" && p != "recoverable" {
				t.Fatalf("accepted %q as the path %q, which is not mutable", paths, p)
			}
		}
		if paths == "" {
			var want []string
			for i, p := range mutable {
				if set&(1<<i) != 0 {
					want = append(want, p)
				}
			}
			got := slices.Clone(out)
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("no mask, fields %08b: paths %v, want %v", set, got, want)
			}
			return
		}
		for _, p := range req.GetUpdateMask().GetPaths() {
			var want []string
			switch {
			case p == "*":
				want = mutable
			case p == "ttl":
				want = []string{"expire_time"}
			case contains(mutable, p):
				want = []string{p}
			case strings.HasPrefix(p, "rate_limit.") || strings.HasPrefix(p, "quota."):
				want = []string{p[:strings.IndexByte(p, '.')]}
			}
			for _, w := range want {
				if !contains(out, w) {
					t.Fatalf("mask path %q: %q missing from %v", p, w, out)
				}
			}
		}
	})
}

// populated returns a key with the mutable fields whose bits are set in
// set (bit i for mutable[i]) given a value.
func populated(set uint8) *keywardv1.Key {
	k := &keywardv1.Key{}
	for i, p := range mutable {
		if set&(1<<i) == 0 {
			continue
		}
		switch p {
		case "display_name":
			k.DisplayName = "n"
		case "description":
			k.Description = "d"
		case "scopes":
			k.Scopes = []string{"a:b"}
		case "metadata":
			k.Metadata = map[string]string{"k": "v"}
		case "expire_time":
			k.Ttl = durationpb.New(3600e9)
		case "allowed_cidrs":
			k.AllowedCidrs = []string{"10.0.0.0/8"}
		case "rate_limit":
			k.RateLimit = &keywardv1.RateLimit{Limit: 1}
		case "quota":
			k.Quota = &keywardv1.Quota{Limit: 1}
		}
	}
	return k
}
