package ratelimit

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/testenv"
)

// benchKeys are the key ids of a benchmark: each goroutine takes its own
// sequence through them, so shards and Redis keys see mixed traffic.
var benchKeys = func() []string {
	ids := make([]string, 1024)
	for i := range ids {
		ids[i] = "key_bench" + strconv.Itoa(i)
	}
	return ids
}()

func benchAllow(b *testing.B, l Limiter) {
	rl := keys.RateLimit{Limit: 1_000_000} // mostly allowed; the work is the same either way
	ctx := context.Background()
	var goroutine atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(goroutine.Add(1)) * 97
		for pb.Next() {
			if _, err := l.Allow(ctx, benchKeys[i%len(benchKeys)], rl); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

func BenchmarkLocalAllow(b *testing.B) {
	benchAllow(b, NewLocal(100_000))
}

func BenchmarkRedisAllow(b *testing.B) {
	benchAllow(b, NewRedis(redisClient(b, testenv.Redis(b)), namespace(b)))
}
