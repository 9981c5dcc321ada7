package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/testenv"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// namespace is a fresh namespace, so that tests sharing a Redis never meet.
func namespace(t testing.TB) string {
	var b [6]byte
	rand.Read(b[:])
	return "rltest-" + hex.EncodeToString(b[:])
}

func redisClient(t testing.TB, addr string) redis.UniversalClient {
	c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{addr},
		DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second, PoolTimeout: time.Second})
	t.Cleanup(func() { c.Close() })
	return c
}

// env is one limiter under test with its clock.
type env struct {
	lim Limiter
	now func() time.Time
	// wait lets d pass: the fake clock moves, or the test sleeps.
	wait func(d time.Duration)
	// tol is how much real time may pass between two calls of one test,
	// by which Redis's answers may fall short of the exact ones.
	tol time.Duration
}

// implementations are the limiters every behavioural test runs against:
// Local on a fake clock (exact), Redis on the real one (with tolerances).
var implementations = []struct {
	name string
	new  func(t *testing.T) env
}{
	{"local", func(t *testing.T) env {
		c := newFakeClock()
		return env{lim: newLocal(1000, c.Now), now: c.Now, wait: c.Advance}
	}},
	{"redis", func(t *testing.T) env {
		return env{lim: NewRedis(redisClient(t, testenv.Redis(t)), namespace(t)), now: time.Now, wait: time.Sleep, tol: 250 * time.Millisecond}
	}},
}

func forEach(t *testing.T, test func(t *testing.T, e env)) {
	for _, impl := range implementations {
		t.Run(impl.name, func(t *testing.T) { test(t, impl.new(t)) })
	}
}

func allow(t *testing.T, l Limiter, id string, rl keys.RateLimit) Decision {
	t.Helper()
	d, err := l.Allow(t.Context(), id, rl)
	if err != nil {
		t.Fatalf("Allow: %v", err)
	}
	return d
}

// near checks that got is want, or up to tol less (time passed since want
// was right).
func near(t *testing.T, what string, got, want, tol time.Duration) {
	t.Helper()
	if got > want || got < want-tol {
		t.Errorf("%s = %v, want %v (tolerance -%v)", what, got, want, tol)
	}
}

func TestBurstThenRefused(t *testing.T) {
	forEach(t, func(t *testing.T, e env) {
		const T = time.Second
		rl := keys.RateLimit{Limit: 5, Period: 5 * time.Second, Burst: 5}
		for i := range 5 {
			d := allow(t, e.lim, "key_burst", rl)
			if !d.Allowed || d.Limit != 5 || d.Remaining != int64(4-i) || d.RetryAfter != 0 {
				t.Fatalf("request %d: %+v, want allowed with %d remaining", i+1, d, 4-i)
			}
			near(t, "ResetAfter", d.ResetAfter, time.Duration(i+1)*T, e.tol)
		}
		d := allow(t, e.lim, "key_burst", rl)
		if d.Allowed || d.Remaining != 0 || d.Limit != 5 {
			t.Fatalf("request 6: %+v, want refused", d)
		}
		near(t, "RetryAfter", d.RetryAfter, T, e.tol)
		near(t, "ResetAfter", d.ResetAfter, 5*T, e.tol)
		// Another key has its own limit.
		if d := allow(t, e.lim, "key_other", rl); !d.Allowed || d.Remaining != 4 {
			t.Errorf("another key: %+v, want allowed with 4 remaining", d)
		}
	})
}

func TestRefillsOneIntervalAtATime(t *testing.T) {
	forEach(t, func(t *testing.T, e env) {
		const T = 100 * time.Millisecond
		rl := keys.RateLimit{Limit: 10, Period: time.Second, Burst: 2}
		allow(t, e.lim, "key_refill", rl)
		allow(t, e.lim, "key_refill", rl)
		d := allow(t, e.lim, "key_refill", rl)
		if d.Allowed {
			t.Fatalf("request 3: %+v, want refused", d)
		}
		near(t, "RetryAfter", d.RetryAfter, T, e.tol)
		e.wait(d.RetryAfter + e.tol/50) // exactly RetryAfter on the fake clock
		if d := allow(t, e.lim, "key_refill", rl); !d.Allowed || d.Remaining != 0 {
			t.Fatalf("after RetryAfter: %+v, want allowed with none remaining", d)
		}
		if d := allow(t, e.lim, "key_refill", rl); d.Allowed {
			t.Fatalf("right after: %+v, want refused", d)
		}
		e.wait(3 * T) // idle long enough to earn the whole burst back
		if d := allow(t, e.lim, "key_refill", rl); !d.Allowed || d.Remaining != 1 {
			t.Fatalf("after idling: %+v, want allowed with 1 remaining", d)
		}
	})
}

func TestDefaults(t *testing.T) {
	forEach(t, func(t *testing.T, e env) {
		// Period 0 is one second, Burst 0 is Limit.
		rl := keys.RateLimit{Limit: 3}
		for i := range 3 {
			if d := allow(t, e.lim, "key_defaults", rl); !d.Allowed {
				t.Fatalf("request %d: %+v, want allowed", i+1, d)
			}
		}
		d := allow(t, e.lim, "key_defaults", rl)
		if d.Allowed {
			t.Fatalf("request 4: %+v, want refused", d)
		}
		near(t, "RetryAfter", d.RetryAfter, 333333*time.Microsecond, e.tol)
	})
}

func TestInvalidLimitIsAnError(t *testing.T) {
	forEach(t, func(t *testing.T, e env) {
		for _, tc := range []struct {
			name string
			rl   keys.RateLimit
		}{
			{"fail/zero-limit", keys.RateLimit{}},
			{"fail/negative-limit", keys.RateLimit{Limit: -1, Period: time.Second}},
			{"fail/negative-period", keys.RateLimit{Limit: 1, Period: -time.Second}},
			{"fail/negative-burst", keys.RateLimit{Limit: 1, Period: time.Second, Burst: -1}},
			{"fail/interval-beyond-span", keys.RateLimit{Limit: 1, Period: math.MaxInt64}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if _, err := e.lim.Allow(t.Context(), "key_invalid", tc.rl); !errors.Is(err, ErrInvalidLimit) {
					t.Errorf("err = %v, want ErrInvalidLimit", err)
				}
			})
		}
	})
}

func TestSteadyRate(t *testing.T) {
	forEach(t, func(t *testing.T, e env) {
		rl := keys.RateLimit{Limit: 100, Period: time.Second, Burst: 10}
		step := func() {} // Redis: as fast as it answers
		if e.tol == 0 {
			step = func() { e.wait(time.Millisecond) }
		}
		start := e.now()
		var allowed, total int
		for e.now().Sub(start) < 2*time.Second {
			if allow(t, e.lim, "key_steady", rl).Allowed {
				allowed++
			}
			total++
			step()
		}
		elapsed := e.now().Sub(start)
		want := 10 + 100*elapsed.Seconds()
		if math.Abs(float64(allowed)-want) > 0.05*want {
			t.Errorf("%d of %d requests allowed in %v, want %.0f ± 5%%", allowed, total, elapsed, want)
		}
		if total < 2*allowed {
			t.Errorf("only %d requests in %v: the limit was hardly tested", total, elapsed)
		}
		t.Logf("%d of %d requests allowed in %v (expected %.1f)", allowed, total, elapsed, want)
	})
}

// TestConcurrentNeverExceeds runs on the real clock for both: many
// goroutines at once must not get more than the limit admits.
func TestConcurrentNeverExceeds(t *testing.T) {
	for _, tc := range []struct {
		name string
		new  func(t *testing.T) Limiter
	}{
		{"local", func(t *testing.T) Limiter { return NewLocal(1000) }},
		{"redis", func(t *testing.T) Limiter { return NewRedis(redisClient(t, testenv.Redis(t)), namespace(t)) }},
		{"redis-two-instances", func(t *testing.T) Limiter {
			ns := namespace(t)
			return &alternating{lims: []Limiter{NewRedis(redisClient(t, testenv.Redis(t)), ns), NewRedis(redisClient(t, testenv.Redis(t)), ns)}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lim := tc.new(t)
			rl := keys.RateLimit{Limit: 200, Period: time.Second, Burst: 20}
			var allowed, total atomic.Int64
			var wg sync.WaitGroup
			// The count is bounded by the time from the first request's start
			// to the last one's end (goroutines may start late).
			var first sync.Once
			var start time.Time
			deadline := time.Now().Add(time.Second)
			for range 8 {
				wg.Go(func() {
					for time.Now().Before(deadline) {
						first.Do(func() { start = time.Now() })
						d, err := lim.Allow(context.Background(), "key_concurrent", rl)
						if err != nil {
							t.Error(err)
							return
						}
						if d.Allowed {
							allowed.Add(1)
						}
						total.Add(1)
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			most := 20 + 200*elapsed.Seconds() + 1
			// The upper bound is the property. The lower one only catches a
			// limiter that refuses far too much: capacity is legitimately
			// lost while the goroutines are starved of CPU (GCRA banks no
			// idle time beyond the burst), as on a loaded CI machine.
			if got := float64(allowed.Load()); got > most || got < 0.6*most {
				t.Errorf("%v of %d requests allowed in %v, want at most %.0f (and at least 60%% of it)", got, total.Load(), elapsed, most)
			}
			t.Logf("%d of %d requests allowed in %v (at most %.1f)", allowed.Load(), total.Load(), elapsed, most)
		})
	}
}

// alternating spreads requests over limiters as a balancer would over instances.
type alternating struct {
	lims []Limiter
	turn atomic.Uint64
}

func (a *alternating) Allow(ctx context.Context, id string, rl keys.RateLimit) (Decision, error) {
	return a.lims[a.turn.Add(1)%uint64(len(a.lims))].Allow(ctx, id, rl)
}

func TestParams(t *testing.T) {
	for _, tc := range []struct {
		name            string
		rl              keys.RateLimit
		interval, burst int64
	}{
		{"ok/defaults", keys.RateLimit{Limit: 10}, 100_000, 10},
		{"ok/rounded", keys.RateLimit{Limit: 3, Period: time.Second, Burst: 1}, 333_333, 1},
		{"ok/rounded-up", keys.RateLimit{Limit: 3, Period: 2 * time.Second, Burst: 1}, 666_667, 1},
		{"ok/fastest-api-limit", keys.RateLimit{Limit: 1_000_000, Period: time.Second}, 1, 1_000_000},
		{"ok/faster-is-one-per-µs", keys.RateLimit{Limit: 10_000_000, Period: time.Second}, 1, 10_000_000},
		{"ok/burst-capped-to-span", keys.RateLimit{Limit: 1, Period: 24 * time.Hour, Burst: 1_000_000}, 86_400_000_000, maxSpan / 86_400_000_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := paramsOf(tc.rl)
			if err != nil || p.interval != tc.interval || p.burst != tc.burst || p.limit != tc.rl.Limit {
				t.Errorf("paramsOf = %+v, %v; want interval %d, burst %d", p, err, tc.interval, tc.burst)
			}
			if p.burst*p.interval > maxSpan {
				t.Errorf("burst×interval %d beyond maxSpan", p.burst*p.interval)
			}
		})
	}
}

// A changed limit applies at once: the key's state is cut to the new
// capacity (so a raised limit admits the next request within one new
// interval), and stays cut even while refusals go on.
func TestChangedLimitAppliesAtOnce(t *testing.T) {
	forEach(t, func(t *testing.T, e env) {
		slow := keys.RateLimit{Limit: 2, Period: time.Hour, Burst: 2}
		allow(t, e.lim, "key_change", slow)
		allow(t, e.lim, "key_change", slow)
		if d := allow(t, e.lim, "key_change", slow); d.Allowed {
			t.Fatalf("third request at 2/h: %+v, want refused", d)
		}
		fast := keys.RateLimit{Limit: 10, Period: time.Second, Burst: 10}
		d := allow(t, e.lim, "key_change", fast)
		if d.Allowed || d.RetryAfter > 100*time.Millisecond {
			t.Fatalf("first request after raising: %+v, want refused for at most one 100 ms interval", d)
		}
		e.wait(120 * time.Millisecond)
		if d := allow(t, e.lim, "key_change", fast); !d.Allowed {
			t.Fatalf("one interval after raising: %+v, want allowed (the old hour-long wait must not carry over)", d)
		}
		// Lowering it cuts the state too: a burst never exceeds the new one.
		low := keys.RateLimit{Limit: 1, Period: time.Second, Burst: 1}
		e.wait(2 * time.Second)
		if d := allow(t, e.lim, "key_change", low); !d.Allowed {
			t.Fatalf("first at 1/s: %+v", d)
		}
		if d := allow(t, e.lim, "key_change", low); d.Allowed {
			t.Fatalf("second at 1/s within a second: %+v, want refused", d)
		}
	})
}
