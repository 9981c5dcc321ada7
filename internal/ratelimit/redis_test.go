package ratelimit

import (
	"strconv"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/testenv"
)

func TestRedisInstancesShareOneLimit(t *testing.T) {
	addr := testenv.Redis(t)
	ns := namespace(t)
	a, b := NewRedis(redisClient(t, addr), ns), NewRedis(redisClient(t, addr), ns)
	other := NewRedis(redisClient(t, addr), namespace(t))
	rl := keys.RateLimit{Limit: 6, Period: time.Minute, Burst: 6}
	for i := range 6 {
		lim := a
		if i%2 == 1 {
			lim = b
		}
		if d := allow(t, lim, "key_shared", rl); !d.Allowed || d.Remaining != int64(5-i) {
			t.Fatalf("request %d: %+v, want allowed with %d remaining", i+1, d, 5-i)
		}
	}
	for name, lim := range map[string]*Redis{"a": a, "b": b} {
		if d := allow(t, lim, "key_shared", rl); d.Allowed {
			t.Errorf("instance %s allowed request 7: %+v", name, d)
		}
	}
	if d := allow(t, other, "key_shared", rl); !d.Allowed || d.Remaining != 5 {
		t.Errorf("another namespace shares the limit: %+v", d)
	}
}

func TestRedisKeyExpiresWhenIdle(t *testing.T) {
	c := redisClient(t, testenv.Redis(t))
	ns := namespace(t)
	lim := NewRedis(c, ns)
	rl := keys.RateLimit{Limit: 10, Period: time.Second, Burst: 3} // T = 100ms
	allow(t, lim, "key_idle", rl)
	d := allow(t, lim, "key_idle", rl)
	key := ns + ":rl:{key_idle}"
	pttl, err := c.PTTL(t.Context(), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	if pttl <= 0 || pttl > d.ResetAfter+time.Millisecond {
		t.Errorf("PTTL %v, want until the TAT passes (%v)", pttl, d.ResetAfter)
	}
	// The TAT is Unix µs written as a plain integer, on Redis's clock.
	v, err := c.Get(t.Context(), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	tat, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		t.Fatalf("stored TAT %q is not an integer: %v", v, err)
	}
	now, err := c.Time(t.Context()).Result()
	if err != nil {
		t.Fatal(err)
	}
	if ahead := time.Duration(tat-now.UnixMicro()) * time.Microsecond; ahead <= 0 || ahead > 200*time.Millisecond {
		t.Errorf("stored TAT is %v from Redis's now, want within 200ms ahead", ahead)
	}
	time.Sleep(d.ResetAfter + 50*time.Millisecond)
	if n, err := c.Exists(t.Context(), key).Result(); err != nil || n != 0 {
		t.Errorf("key still there after its TAT passed (exists %d, err %v)", n, err)
	}
	// A refusal writes nothing: the key keeps the TTL of its TAT.
	for range 3 {
		allow(t, lim, "key_idle", rl)
	}
	if d := allow(t, lim, "key_idle", rl); d.Allowed {
		t.Fatalf("request 4: %+v, want refused", d)
	}
	pttl, _ = c.PTTL(t.Context(), key).Result()
	if pttl > 300*time.Millisecond {
		t.Errorf("PTTL %v after a refusal, want at most 300ms", pttl)
	}
}

// TestRedisFreshServer runs against a Redis that has never seen the script:
// EVALSHA answers NOSCRIPT and the limiter sends it with EVAL.
func TestRedisFreshServer(t *testing.T) {
	rs := testenv.StartRedis(t)
	lim := NewRedis(redisClient(t, rs.Addr), "")
	if d := allow(t, lim, "key_fresh", keys.RateLimit{Limit: 1, Period: time.Minute}); !d.Allowed {
		t.Fatalf("%+v, want allowed", d)
	}
	rs.Stop()
	rs.Start() // empty again: the script cache and the TAT are gone
	if d := allow(t, lim, "key_fresh", keys.RateLimit{Limit: 1, Period: time.Minute}); !d.Allowed {
		t.Fatalf("after a restart: %+v, want allowed", d)
	}
	if n, _ := redisClient(t, rs.Addr).Exists(t.Context(), "kw:rl:{key_fresh}").Result(); n != 1 {
		t.Error(`default namespace: no key "kw:rl:{key_fresh}"`)
	}
}
