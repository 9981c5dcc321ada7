package extauthz

import (
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"
)

// FuzzCheckView is differential: on any bytes, checkView.parse never
// panics, and whenever proto.Unmarshal accepts the bytes as a CheckRequest
// the view accepts them too and reads the same headers (lookups and
// names), path, scopes, environment and source address (compareView). The
// view may accept bytes protobuf refuses: it checks neither UTF-8 nor the
// parts of the message it does not read (Envoy never sends such bytes; a
// value that is not UTF-8 cannot match a key, a scope or an address).
// Seeds: testdata/fuzz/FuzzCheckView, CheckRequests as randomRequest builds
// them, marshalled, and a few corrupted.
func FuzzCheckView(f *testing.F) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 4 {
		b, err := proto.Marshal(randomRequest(r))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := compareView(b); err != nil {
			t.Fatalf("%v: %x", err, b)
		}
	})
}
