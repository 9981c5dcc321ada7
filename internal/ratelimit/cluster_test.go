package ratelimit

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/testenv"
)

// TestRedisClusterSharesLimits runs the limiter on a three-node Redis
// Cluster: the script touches one key, whose hash tag is the key id, so it
// runs on any shard without CROSSSLOT errors; two instances share each
// key's limit; and the keys of many key ids spread over every shard.
func TestRedisClusterSharesLimits(t *testing.T) {
	rc := testenv.StartRedisCluster(t)
	client := func() *redis.ClusterClient {
		c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs,
			DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second, PoolTimeout: time.Second})
		t.Cleanup(func() { c.Close() })
		return c
	}
	ns := namespace(t)
	a, b := NewRedis(client(), ns), NewRedis(client(), ns)
	rl := keys.RateLimit{Limit: 4, Period: time.Minute, Burst: 4}
	for i := range 30 {
		id := fmt.Sprintf("key_%02d", i)
		for j := range 4 {
			lim := a
			if j%2 == 1 {
				lim = b
			}
			if d := allow(t, lim, id, rl); !d.Allowed || d.Remaining != int64(3-j) {
				t.Fatalf("%s request %d: %+v, want allowed with %d remaining", id, j+1, d, 3-j)
			}
		}
		if d := allow(t, b, id, rl); d.Allowed {
			t.Fatalf("%s request 5 allowed: %+v", id, d)
		}
	}
	var shards, used atomic.Int64
	err := client().ForEachMaster(context.Background(), func(ctx context.Context, m *redis.Client) error {
		shards.Add(1)
		if n, err := m.DBSize(ctx).Result(); err != nil {
			return err
		} else if n > 0 {
			used.Add(1)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if shards.Load() != 3 || used.Load() != 3 {
		t.Errorf("limits held on %d of %d shards; want the 30 keys spread over all 3", used.Load(), shards.Load())
	}
}
