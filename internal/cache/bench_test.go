package cache

import (
	"context"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testenv"
)

// BenchmarkRedisHit is a lookup answered by Redis (in-process tier off).
func BenchmarkRedisHit(b *testing.B) {
	st, err := openBenchStore(b)
	if err != nil {
		b.Fatal(err)
	}
	rc := redisClient(b, testenv.Redis(b))
	c := New(Options{Store: st.lookup, Redis: rc, Namespace: "benchredis", Logger: quiet})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Run(ctx)
	for !c.bus.fresh(c.now()) {
		time.Sleep(time.Millisecond)
	}
	_, sec := st.addKey(b)
	if _, err := c.ByHash(ctx, sec.Sum()); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.ByHash(ctx, sec.Sum()); err != nil {
			b.Fatal(err)
		}
	}
}
