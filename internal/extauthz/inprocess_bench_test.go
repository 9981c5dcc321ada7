package extauthz

import (
	"context"
	"io"
	"log/slog"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/cache"
	"github.com/keyward/keyward/internal/keyservice"
	"github.com/keyward/keyward/internal/store/sqlite"
	"github.com/keyward/keyward/internal/validate"
)

// BenchmarkInProcess compares the Check handler (from the request's wire
// bytes, as gRPC hands them over) to the Validate handler on an in-process
// cache hit, without gRPC: `go test -bench InProcess -benchmem`.
func BenchmarkInProcess(b *testing.B) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, b.TempDir()+"/k.db")
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	c := cache.New(cache.Options{Store: st.GetByHash, Local: true, Logger: log})
	v := validate.New(c, nil)
	svc := keyservice.New(keyservice.Options{Store: st, Verifier: v, Caches: c, Logger: log})
	a, err := New(Options{Verifier: v, StripCredential: true, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	created, err := svc.CreateKey(ctx, &keywardv1.CreateKeyRequest{Key: &keywardv1.Key{
		DisplayName: "bench", Scopes: []string{"orders:read"}, Metadata: map[string]string{"team": "mes"},
	}})
	if err != nil {
		b.Fatal(err)
	}
	vreq := &keywardv1.ValidateRequest{Key: created.GetSecret()}
	creq, err := proto.Marshal(envoyRequest("/orders/42", map[string]string{"x-api-key": created.GetSecret()}, nil))
	if err != nil {
		b.Fatal(err)
	}
	b.Run("Validate", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if r, err := svc.Validate(ctx, vreq); err != nil || !r.GetValid() {
				b.Fatal("refused")
			}
		}
	})
	b.Run("Check", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if r, err := a.check(ctx, creq); err != nil || r.GetOkResponse() == nil {
				b.Fatal("refused")
			}
		}
	})
	// The typed decoding this package avoids, for comparison.
	b.Run("DecodeCheckRequest", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := proto.Unmarshal(creq, new(authv3.CheckRequest)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkParse is the wire reading of an Envoy-shaped request alone.
func BenchmarkParse(b *testing.B) {
	req, err := proto.Marshal(envoyRequest("/orders/42", map[string]string{"x-api-key": "kw_live_x"}, nil))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		var v checkView
		if err := v.parse(req); err != nil || v.n == 0 {
			b.Fatal(err)
		}
	}
}
