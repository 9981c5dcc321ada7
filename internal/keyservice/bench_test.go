package keyservice_test

import (
	"context"
	"io"
	"log/slog"
	"testing"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/cache"
	"github.com/keyward/keyward/internal/keyservice"
	"github.com/keyward/keyward/internal/store/sqlite"
	"github.com/keyward/keyward/internal/validate"
)

// BenchmarkValidateLocalHit measures the Validate handler on the in-process
// path (no gRPC), for allocations per call: `go test -bench . -benchmem`.
func BenchmarkValidateLocalHit(b *testing.B) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, b.TempDir()+"/k.db")
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	c := cache.New(cache.Options{Store: st.GetByHash, Local: true, Logger: log})
	svc := keyservice.New(keyservice.Options{Store: st, Verifier: validate.New(c, nil), Caches: c, Logger: log})
	created, err := svc.CreateKey(ctx, &keywardv1.CreateKeyRequest{Key: &keywardv1.Key{
		DisplayName: "bench", Scopes: []string{"orders:read"}, Metadata: map[string]string{"team": "mes"},
	}})
	if err != nil {
		b.Fatal(err)
	}
	req := &keywardv1.ValidateRequest{Key: created.GetSecret()}
	if r, err := svc.Validate(ctx, req); err != nil || !r.GetValid() {
		b.Fatalf("warm-up: %v %v", r, err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r, err := svc.Validate(ctx, req)
		if err != nil || !r.GetValid() {
			b.Fatal("refused")
		}
	}
}
