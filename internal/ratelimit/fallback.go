package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/keyward/keyward/internal/keys"
)

// OnError says what a Fallback decides while its primary limiter fails. The
// key itself was verified before any limit is counted, so none of these
// lets an unknown key in.
type OnError int

const (
	// FailLocal enforces each limit per instance, in process: with N
	// instances a key gets up to N times its limit. The default.
	FailLocal OnError = iota
	// FailOpen allows every request: the limit is off while Redis is.
	FailOpen
	// FailClosed refuses every request of a rate-limited key.
	FailClosed
)

func (m OnError) String() string {
	switch m {
	case FailLocal:
		return "local"
	case FailOpen:
		return "open"
	case FailClosed:
		return "closed"
	}
	return fmt.Sprintf("OnError(%d)", int(m))
}

// ParseOnError reads "local", "open" or "closed", for configuration.
func ParseOnError(s string) (OnError, error) {
	for _, m := range []OnError{FailLocal, FailOpen, FailClosed} {
		if s == m.String() {
			return m, nil
		}
	}
	return 0, fmt.Errorf("rate limit failure mode %q: want local, open or closed", s)
}

// probeInterval is how long a Fallback leaves its primary alone after a
// failure, and the RetryAfter of FailClosed's refusals.
const probeInterval = time.Second

// Fallback is a Limiter that asks its primary (Redis) and, when that fails,
// decides by its OnError mode instead of returning the error. After a
// failure it does not ask the primary again for a second, so a stalled Redis
// costs one timeout per second, not one per request.
type Fallback struct {
	primary Limiter
	mode    OnError
	local   *Local
	log     *slog.Logger
	now     func() time.Time
	start   time.Time
	skip    atomic.Int64 // clock reading (ns since start) until which the primary is skipped
	down    atomic.Bool  // the primary's last answer was a failure
	logged  atomic.Int64 // clock reading of the last log line; 0 for none
}

// NewFallback wraps primary. local serves FailLocal (nil: a new Local for
// 100,000 keys); log may be nil for slog.Default(). Logs say that the
// primary failed or recovered, at most once a second, never naming a key.
func NewFallback(primary Limiter, mode OnError, local *Local, log *slog.Logger) *Fallback {
	return newFallback(primary, mode, local, log, time.Now)
}

func newFallback(primary Limiter, mode OnError, local *Local, log *slog.Logger, now func() time.Time) *Fallback {
	if local == nil && mode == FailLocal {
		local = newLocal(0, now)
	}
	if log == nil {
		log = slog.Default()
	}
	return &Fallback{primary: primary, mode: mode, local: local, log: log, now: now, start: now()}
}

func (f *Fallback) clock() int64 { return int64(f.now().Sub(f.start)) }

// Allow implements Limiter. Its errors are ErrInvalidLimit, and the
// primary's error when ctx ended (the caller has gone; nothing to decide).
func (f *Fallback) Allow(ctx context.Context, keyID string, rl keys.RateLimit) (Decision, error) {
	if f.clock() >= f.skip.Load() {
		d, err := f.primary.Allow(ctx, keyID, rl)
		if err == nil {
			if f.down.Load() && f.down.CompareAndSwap(true, false) {
				f.logf(ctx, slog.LevelInfo, "rate limiter available again", nil)
			}
			return d, nil
		}
		if errors.Is(err, ErrInvalidLimit) || ctx.Err() != nil {
			return Decision{}, err
		}
		f.skip.Store(f.clock() + int64(probeInterval))
		if !f.down.Swap(true) {
			f.logf(ctx, slog.LevelWarn, "rate limiter unavailable", err)
		}
	}
	return f.degraded(ctx, keyID, rl)
}

func (f *Fallback) degraded(ctx context.Context, keyID string, rl keys.RateLimit) (Decision, error) {
	switch f.mode {
	case FailOpen:
		p, err := paramsOf(rl)
		if err != nil {
			return Decision{}, err
		}
		// What a fresh limit would answer.
		return p.decision(true, p.burst-1, 0, p.interval), nil
	case FailClosed:
		if _, err := paramsOf(rl); err != nil {
			return Decision{}, err
		}
		return Decision{Allowed: false, Limit: rl.Limit, RetryAfter: probeInterval, ResetAfter: probeInterval}, nil
	default:
		return f.local.Allow(ctx, keyID, rl)
	}
}

// logf logs unless another line was logged less than a second ago.
func (f *Fallback) logf(ctx context.Context, level slog.Level, msg string, err error) {
	now := f.clock() + 1 // never 0, which means "no line yet"
	last := f.logged.Load()
	if last != 0 && now-last < int64(time.Second) || !f.logged.CompareAndSwap(last, now) {
		return
	}
	attrs := []any{"on_error", f.mode.String()}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	f.log.Log(ctx, level, msg, attrs...)
}
