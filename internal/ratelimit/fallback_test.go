package ratelimit

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/testenv"
)

// deadRedis is a limiter whose Redis never answers: nothing listens on port 1.
func deadRedis(t *testing.T) *Redis {
	c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{"127.0.0.1:1"},
		DialTimeout: 100 * time.Millisecond, ReadTimeout: 100 * time.Millisecond, WriteTimeout: 100 * time.Millisecond,
		PoolTimeout: 100 * time.Millisecond, MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { c.Close() })
	return NewRedis(c, namespace(t))
}

// logBuffer collects log lines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.FieldsFunc(l.b.String(), func(r rune) bool { return r == '\n' })
}

func newLog() (*slog.Logger, *logBuffer) {
	var b logBuffer
	return slog.New(slog.NewTextHandler(&b, nil)), &b
}

func TestRedisDownIsUnavailable(t *testing.T) {
	_, err := deadRedis(t).Allow(t.Context(), "key_down", keys.RateLimit{Limit: 1})
	if !errors.Is(err, keys.ErrUnavailable) {
		t.Errorf("err = %v, want keys.ErrUnavailable", err)
	}
	if err != nil && strings.Contains(err.Error(), "key_down") {
		t.Errorf("error %q names the key", err)
	}
}

func TestFallbackModes(t *testing.T) {
	rl := keys.RateLimit{Limit: 3, Period: 3 * time.Second} // T = 1s, burst 3
	for _, tc := range []struct {
		name string
		mode OnError
		want []Decision
	}{
		{"ok/open-allows", FailOpen, []Decision{
			{Allowed: true, Limit: 3, Remaining: 2, ResetAfter: time.Second},
			{Allowed: true, Limit: 3, Remaining: 2, ResetAfter: time.Second},
			{Allowed: true, Limit: 3, Remaining: 2, ResetAfter: time.Second},
			{Allowed: true, Limit: 3, Remaining: 2, ResetAfter: time.Second},
		}},
		{"refused/closed-denies", FailClosed, []Decision{
			{Allowed: false, Limit: 3, RetryAfter: time.Second, ResetAfter: time.Second},
			{Allowed: false, Limit: 3, RetryAfter: time.Second, ResetAfter: time.Second},
		}},
		{"ok/local-enforces", FailLocal, []Decision{
			{Allowed: true, Limit: 3, Remaining: 2, ResetAfter: time.Second},
			{Allowed: true, Limit: 3, Remaining: 1, ResetAfter: 2 * time.Second},
			{Allowed: true, Limit: 3, Remaining: 0, ResetAfter: 3 * time.Second},
			{Allowed: false, Limit: 3, RetryAfter: time.Second, ResetAfter: 3 * time.Second},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newFakeClock()
			log, buf := newLog()
			f := newFallback(deadRedis(t), tc.mode, newLocal(10, c.Now), log, c.Now)
			for i, want := range tc.want {
				d, err := f.Allow(t.Context(), "key_fallback", rl)
				if err != nil || d != want {
					t.Errorf("request %d: %+v, %v; want %+v", i+1, d, err, want)
				}
			}
			lines := buf.lines()
			if len(lines) != 1 || !strings.Contains(lines[0], "rate limiter unavailable") ||
				!strings.Contains(lines[0], "on_error="+tc.mode.String()) || strings.Contains(lines[0], "key_fallback") {
				t.Errorf("log: %q, want one line naming the mode and not the key", lines)
			}
			if _, err := f.Allow(t.Context(), "key_fallback", keys.RateLimit{Limit: -1}); !errors.Is(err, ErrInvalidLimit) {
				t.Errorf("invalid limit while Redis is down: %v, want ErrInvalidLimit", err)
			}
		})
	}
}

// fakeLimiter answers from a function and counts its calls.
type fakeLimiter struct {
	mu    sync.Mutex
	calls int
	fn    func(ctx context.Context) (Decision, error)
}

func (l *fakeLimiter) Allow(ctx context.Context, _ string, _ keys.RateLimit) (Decision, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls++
	return l.fn(ctx)
}

func (l *fakeLimiter) set(fn func(ctx context.Context) (Decision, error)) {
	l.mu.Lock()
	l.fn = fn
	l.mu.Unlock()
}

func (l *fakeLimiter) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls
}

func TestFallbackProbesOncePerSecondAndLogsTransitions(t *testing.T) {
	c := newFakeClock()
	log, buf := newLog()
	fromPrimary := Decision{Allowed: true, Limit: 7, Remaining: 5, ResetAfter: time.Minute}
	down := func(context.Context) (Decision, error) { return Decision{}, errors.New("redis: connection refused") }
	primary := &fakeLimiter{fn: down}
	f := newFallback(primary, FailOpen, nil, log, c.Now)
	rl := keys.RateLimit{Limit: 7}
	for range 100 {
		if d, err := f.Allow(t.Context(), "key_probe", rl); err != nil || !d.Allowed {
			t.Fatalf("%+v, %v; want allowed", d, err)
		}
		c.Advance(time.Millisecond) // 100ms in all
	}
	if n := primary.count(); n != 1 {
		t.Errorf("primary asked %d times in 100ms after a failure, want once", n)
	}
	c.Advance(time.Second)
	f.Allow(t.Context(), "key_probe", rl) // probe fails: skip another second, no new log line
	if n := primary.count(); n != 2 {
		t.Errorf("primary asked %d times, want 2 (one probe after a second)", n)
	}
	primary.set(func(context.Context) (Decision, error) { return fromPrimary, nil })
	c.Advance(time.Second)
	for range 3 {
		if d, err := f.Allow(t.Context(), "key_probe", rl); err != nil || d != fromPrimary {
			t.Errorf("after recovery: %+v, %v; want the primary's %+v", d, err, fromPrimary)
		}
	}
	lines := buf.lines()
	if len(lines) != 2 || !strings.Contains(lines[0], "level=WARN") || !strings.Contains(lines[0], "connection refused") ||
		!strings.Contains(lines[1], "level=INFO") || !strings.Contains(lines[1], "available again") {
		t.Errorf("log: %q, want one warning and one recovery", lines)
	}
	for _, l := range lines {
		if strings.Contains(l, "key_probe") {
			t.Errorf("log line names the key: %q", l)
		}
	}

	// Flapping: a failure right after the recovery line is not logged.
	primary.set(down)
	f.Allow(t.Context(), "key_probe", rl)
	if n := len(buf.lines()); n != 2 {
		t.Errorf("%d log lines, want still 2 within a second of the last", n)
	}
}

func TestFallbackReturnsErrorsItMustNotHide(t *testing.T) {
	for _, tc := range []struct {
		name    string
		primary func(context.Context) (Decision, error)
		cancel  bool
		want    error
	}{
		{"fail/invalid-limit", func(context.Context) (Decision, error) {
			return Decision{}, ErrInvalidLimit
		}, false, ErrInvalidLimit},
		{"fail/caller-gone", func(ctx context.Context) (Decision, error) {
			return Decision{}, ctx.Err()
		}, true, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log, buf := newLog()
			primary := &fakeLimiter{fn: tc.primary}
			f := newFallback(primary, FailOpen, nil, log, time.Now)
			ctx, cancel := context.WithCancel(t.Context())
			if tc.cancel {
				cancel()
			}
			defer cancel()
			if _, err := f.Allow(ctx, "key_err", keys.RateLimit{Limit: 1}); !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
			// Not a failure of the primary: the next request asks it again.
			f.Allow(t.Context(), "key_err", keys.RateLimit{Limit: 1})
			if n := primary.count(); n != 2 {
				t.Errorf("primary asked %d times, want 2", n)
			}
			if lines := buf.lines(); len(lines) != 0 {
				t.Errorf("logged %q", lines)
			}
		})
	}
}

// TestFallbackStalledRedis pauses a private Redis: requests are decided
// within the client's timeout, then without waiting, and by Redis again once
// it answers.
func TestFallbackStalledRedis(t *testing.T) {
	rs := testenv.StartRedis(t)
	c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{rs.Addr},
		DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond,
		PoolTimeout: 200 * time.Millisecond, MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { c.Close() })
	log, _ := newLog()
	f := NewFallback(NewRedis(c, namespace(t)), FailClosed, nil, log)
	rl := keys.RateLimit{Limit: 100, Period: 1000 * time.Second} // T = 10s: nothing refills during the test
	if d := allow(t, f, "key_stall", rl); !d.Allowed {
		t.Fatalf("Redis up: %+v, want allowed", d)
	}
	rs.Pause()
	start := time.Now()
	if d := allow(t, f, "key_stall", rl); d.Allowed || d.RetryAfter != time.Second {
		t.Errorf("Redis stalled: %+v, want refused for 1s", d)
	}
	first := time.Since(start)
	start = time.Now()
	for range 100 {
		allow(t, f, "key_stall", rl)
	}
	rest := time.Since(start)
	if first > 600*time.Millisecond || rest > 100*time.Millisecond {
		t.Errorf("first request decided in %v (want about the 200ms timeout), 100 more in %v (want no waiting)", first, rest)
	}
	rs.Resume()
	time.Sleep(probeInterval + 50*time.Millisecond)
	// 98 left, or 97: the request that timed out was sent, and Redis may
	// run it when it wakes up although nobody reads the answer.
	if d := allow(t, f, "key_stall", rl); !d.Allowed || d.Remaining != 98 && d.Remaining != 97 {
		t.Errorf("Redis back: %+v, want allowed by Redis with 98 (or 97) remaining", d)
	}
}

func TestParseOnError(t *testing.T) {
	for _, m := range []OnError{FailLocal, FailOpen, FailClosed} {
		if got, err := ParseOnError(m.String()); err != nil || got != m {
			t.Errorf("ParseOnError(%q) = %v, %v", m.String(), got, err)
		}
	}
	if _, err := ParseOnError("maybe"); err == nil {
		t.Error(`ParseOnError("maybe") succeeded`)
	}
}
