package keyservice

import (
	"bytes"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/keymat"
)

// FuzzSearchQuery: searchQuery never panics, and a query is matched one way
// only: a checksum-valid secret by its hash alone (its text never reaches
// the name or prefix match, where a store could log it); anything else by
// name, and also by visible start when it begins like a secret. It sets no
// paging fields.
func FuzzSearchQuery(f *testing.F) {
	f.Add("orders")
	f.Fuzz(func(t *testing.T, query string) {
		q := searchQuery(query)
		if q.AfterID != "" || q.Limit != 0 || !q.UnusedBefore.IsZero() {
			t.Fatalf("searchQuery(%q) set paging fields: %+v", query, q)
		}
		if query == "" {
			if q.Hash != nil || q.NameContains != "" || q.StartPrefix != "" {
				t.Fatalf("empty query filters: %+v", q)
			}
			return
		}
		if secret, err := keymat.Parse(query); err == nil {
			if !bytes.Equal(q.Hash, secret.Hash()) || q.NameContains != "" || q.StartPrefix != "" {
				t.Fatalf("secret query matched by hash %x, name %q, prefix %q; want its hash only", q.Hash, q.NameContains, q.StartPrefix)
			}
			return
		}
		if q.Hash != nil || q.NameContains != query {
			t.Fatalf("searchQuery(%q) = %+v, want a name match", query, q)
		}
		if wantPrefix := strings.HasPrefix(query, keymat.Issuer+"_"); (q.StartPrefix == query) != wantPrefix || (!wantPrefix && q.StartPrefix != "") {
			t.Fatalf("searchQuery(%q) start prefix %q", query, q.StartPrefix)
		}
	})
}
