package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keyward/keyward/internal/keys"
)

// Decision is the outcome of one request against a limit.
type Decision struct {
	Allowed bool
	// Limit is the limit's requests per period.
	Limit int64
	// Remaining is how many more requests could be made at once right now
	// (after this one).
	Remaining int64
	// RetryAfter is set when refused: until one request would be allowed.
	RetryAfter time.Duration
	// ResetAfter is until the limit is fully available (the burst restored).
	ResetAfter time.Duration
}

// Limiter counts one request of key keyID against the limit rl. A refusal is
// a Decision, not an error. The error wraps ErrInvalidLimit when rl makes no
// sense, and otherwise means the limit could not be consulted (Redis is
// down): the caller decides, or wraps the limiter in a Fallback.
type Limiter interface {
	Allow(ctx context.Context, keyID string, rl keys.RateLimit) (Decision, error)
}

var (
	_ Limiter = (*Local)(nil)
	_ Limiter = (*Redis)(nil)
	_ Limiter = (*Fallback)(nil)
)

// ErrInvalidLimit: a limit with Limit < 1, or a negative Period or Burst.
// The API refuses those when a key is written; a limiter meeting one has a
// bug upstream, so it is an error rather than a guess.
var ErrInvalidLimit = errors.New("invalid rate limit")

// maxSpan bounds Burst·T, how far a TAT may run ahead of now: 2^52 µs, about
// 142 years. Unix microseconds plus maxSpan stay below 2^53, exact in a
// Lua double, until the year 2112.
const maxSpan = 1 << 52

// params is a limit in the algorithm's terms.
type params struct {
	limit    int64
	interval int64 // T = Period/Limit, in µs, at least 1
	burst    int64 // at least 1, at most maxSpan/interval
}

// paramsOf checks rl and applies the API's defaults defensively: a zero
// Period is one second, a zero Burst is Limit.
func paramsOf(rl keys.RateLimit) (params, error) {
	if rl.Limit < 1 {
		return params{}, fmt.Errorf("%w: limit %d, want at least 1", ErrInvalidLimit, rl.Limit)
	}
	period := rl.Period
	if period == 0 {
		period = time.Second
	}
	if period < 0 {
		return params{}, fmt.Errorf("%w: negative period %s", ErrInvalidLimit, period)
	}
	burst := rl.Burst
	if burst == 0 {
		burst = rl.Limit
	}
	if burst < 0 {
		return params{}, fmt.Errorf("%w: negative burst %d", ErrInvalidLimit, burst)
	}
	// Nanoseconds per request, rounded to microseconds.
	ns := int64(period) / rl.Limit
	interval := ns / 1000
	if ns%1000 >= 500 {
		interval++
	}
	interval = max(interval, 1)
	if interval > maxSpan {
		return params{}, fmt.Errorf("%w: %s per request is too long", ErrInvalidLimit, period/time.Duration(rl.Limit))
	}
	// A burst that would take more than maxSpan to earn back is cut to what
	// maxSpan allows: only visible after a century of use.
	return params{limit: rl.Limit, interval: interval, burst: min(burst, maxSpan/interval)}, nil
}

// step judges one request at now (µs) against a stored tat (µs; anything at
// or before now for a key without one) and returns the TAT to store, which is
// tat itself (cut to the capacity of a changed limit) when the request is
// refused. The Redis script does the same.
func (p params) step(tat, now int64) (int64, Decision) {
	// A stored TAT never runs more than Burst·T ahead, so the clamp changes
	// nothing until the limit itself changes: then the key keeps its state,
	// cut to the new limit's capacity, and a raised limit applies at once.
	tat = min(max(tat, now), now+p.burst*p.interval)
	newTAT := tat + p.interval
	allowAt := newTAT - p.burst*p.interval
	if now < allowAt {
		return tat, p.decision(false, 0, allowAt-now, tat-now)
	}
	return newTAT, p.decision(true, (now-allowAt)/p.interval, 0, newTAT-now)
}

func (p params) decision(allowed bool, remaining, retryAfter, resetAfter int64) Decision {
	return Decision{
		Allowed:    allowed,
		Limit:      p.limit,
		Remaining:  min(max(remaining, 0), p.burst),
		RetryAfter: time.Duration(retryAfter) * time.Microsecond,
		ResetAfter: time.Duration(resetAfter) * time.Microsecond,
	}
}
