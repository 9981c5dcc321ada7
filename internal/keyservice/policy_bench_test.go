package keyservice_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/types/known/durationpb"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/cache"
	"github.com/keyward/keyward/internal/keyservice"
	"github.com/keyward/keyward/internal/ratelimit"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/store/postgres"
	"github.com/keyward/keyward/internal/store/sqlite"
	"github.com/keyward/keyward/internal/testenv"
	"github.com/keyward/keyward/internal/validate"
)

// BenchmarkPolicies measures the Validate handler on the in-process path
// (no gRPC) for a key with each policy, to compare with "none": `make
// bench` prints each as a throughput ratio. Limits are set so high that no
// request is refused: the cost measured is the check's, not a refusal's.
func BenchmarkPolicies(b *testing.B) {
	day := durationpb.New(24 * time.Hour)
	huge := &keywardv1.Quota{Limit: 1_000_000_000_000}
	fast := &keywardv1.RateLimit{Limit: 1_000_000, Burst: 1_000_000}
	cidrs := []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "2001:db8::/32"}
	for _, c := range []struct {
		name   string
		key    *keywardv1.Key
		req    func(*keywardv1.ValidateRequest)
		rotate bool   // validate with a replaced secret in its grace period
		need   string // "redis" or "postgres": the counter's backend
	}{
		{name: "none", key: &keywardv1.Key{}},
		{name: "expiry", key: &keywardv1.Key{Ttl: day}},
		{name: "scopes", key: &keywardv1.Key{Scopes: []string{"billing:read", "orders:*"}},
			req: func(r *keywardv1.ValidateRequest) { r.RequiredScopes = []string{"orders:read"} }},
		{name: "environment", key: &keywardv1.Key{},
			req: func(r *keywardv1.ValidateRequest) { r.Environment = "live" }},
		{name: "ip_allow_list", key: &keywardv1.Key{AllowedCidrs: cidrs},
			req: func(r *keywardv1.ValidateRequest) { r.ClientIp = "192.168.7.9" }},
		{name: "rotation_grace", key: &keywardv1.Key{}, rotate: true},
		{name: "rate_limit_in_process", key: &keywardv1.Key{RateLimit: fast}},
		{name: "rate_limit_redis", key: &keywardv1.Key{RateLimit: fast}, need: "redis"},
		{name: "quota_sqlite", key: &keywardv1.Key{Quota: huge}},
		{name: "quota_postgres", key: &keywardv1.Key{Quota: huge}, need: "postgres"},
	} {
		b.Run(c.name, func(b *testing.B) {
			ctx := context.Background()
			var st store.Store
			var err error
			if c.need == "postgres" {
				st, err = postgres.Open(ctx, testenv.Postgres(b))
			} else {
				st, err = sqlite.Open(ctx, b.TempDir()+"/k.db")
			}
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			var limiter validate.RateLimiter = ratelimit.NewLocal(1000)
			if c.need == "redis" {
				rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(b)})
				defer rdb.Close()
				limiter = ratelimit.NewRedis(rdb, "kwbench-"+time.Now().Format("150405.000000"))
			}
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			ch := cache.New(cache.Options{Store: st.GetByHash, Local: true, Logger: log})
			v := validate.NewWith(validate.Options{Lookup: ch, Limiter: limiter, Quotas: st})
			svc := keyservice.New(keyservice.Options{Store: st, Verifier: v, Caches: ch, Logger: log})
			c.key.DisplayName = "bench " + c.name
			created, err := svc.CreateKey(ctx, &keywardv1.CreateKeyRequest{Key: c.key})
			if err != nil {
				b.Fatal(err)
			}
			req := &keywardv1.ValidateRequest{Key: created.GetSecret()}
			if c.rotate {
				if _, err := svc.RegenerateKey(ctx, &keywardv1.RegenerateKeyRequest{KeyId: created.GetKey().GetKeyId(), GracePeriod: day}); err != nil {
					b.Fatal(err)
				}
			}
			if c.req != nil {
				c.req(req)
			}
			if r, err := svc.Validate(ctx, req); err != nil || !r.GetValid() {
				b.Fatalf("warm-up: %v %v", r, err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					r, err := svc.Validate(ctx, req)
					if err != nil || !r.GetValid() {
						b.Errorf("refused: %v %v", r, err)
						return
					}
				}
			})
		})
	}
}
