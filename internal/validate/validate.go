// Package validate is the one verifier behind gRPC Validate, Envoy Check and
// forward-auth: parse and checksum, hash, look up, then judge the key's
// state and policies. Keeping it in one place means every entry point
// refuses exactly the same keys.
package validate

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/keyward/keyward/internal/keymat"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/ratelimit"
)

// Reason says why a key was accepted or refused.
type Reason int

const (
	ReasonValid Reason = iota + 1
	ReasonNotFound
	ReasonMalformed
	ReasonDisabled
	ReasonExpired
	ReasonInsufficientScope
	ReasonWrongEnvironment
	ReasonIPNotAllowed
	ReasonRateLimited
	ReasonUsageExceeded
)

// Lookup finds a key by the SHA-256 of its secret (the current secret's or,
// during a rotation's grace period, the replaced one's). It returns an error
// wrapping keys.ErrNotFound for an unknown hash; any other error means the
// answer is unknown and the verifier fails closed.
type Lookup interface {
	ByHash(ctx context.Context, hash [32]byte) (*keys.Key, error)
}

// RateLimiter counts a request against a key's rate limit.
type RateLimiter interface {
	Allow(ctx context.Context, keyID string, rl keys.RateLimit) (ratelimit.Decision, error)
}

// QuotaCounter counts one use against a key's quota (store.Store does):
// an error wrapping keys.ErrQuotaExceeded when none is left.
type QuotaCounter interface {
	ConsumeQuota(ctx context.Context, id string, q keys.Quota, now time.Time) (remaining int64, err error)
}

// Request is what a caller presents.
type Request struct {
	Secret         string
	RequiredScopes []string
	Environment    string
	// ClientIP is the caller's client address; the zero Addr when unknown,
	// which a key with an IP allow-list refuses.
	ClientIP netip.Addr
	// Entry names the caller's entry point, for observers only.
	Entry Entry
}

// Result is the verdict. Key is set only when Valid.
type Result struct {
	Valid  bool
	Reason Reason
	Key    *keys.Key
	// KeyID names the key whenever one was found, refused or not. For
	// accounting only: it must not reach a caller of a refusal.
	KeyID string
	// RetryAfter is set with ReasonRateLimited, and with ReasonUsageExceeded
	// for a refilling quota: until a request can succeed.
	RetryAfter time.Duration
	// Rate is where a rate-limited key stands after this request (HasRate).
	Rate    ratelimit.Decision
	HasRate bool
	// RemainingUses is what a key with a quota has left after this use (HasQuota).
	RemainingUses int64
	HasQuota      bool
}

// Options configures a Verifier.
type Options struct {
	Lookup Lookup
	// Limiter enforces rate limits; nil limits each process on its own.
	Limiter RateLimiter
	// Quotas counts uses; nil refuses every key that has a quota as
	// unverifiable (an error), since its uses could not be counted.
	Quotas QuotaCounter
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Usage learns the outcome of every verification of a known key.
	Usage UsageRecorder
	// Pacer, if set, holds refusals of the key itself (pace.go).
	Pacer Pacer
}

// UsageRecorder counts verifications per key and outcome. It is called on
// the hot path: it must be cheap, never block, and be safe for concurrent use.
type UsageRecorder interface {
	Used(keyID string, r Reason)
}

// Verifier judges presented secrets.
type Verifier struct {
	lookup  Lookup
	limiter RateLimiter
	quotas  QuotaCounter
	usage   UsageRecorder
	now     func() time.Time
	obs     Observer // nil: none (see Observe)
	pacer   Pacer    // nil: none
	// ownStart: now is not time.Now, so the pacer gets a reading of its own.
	ownStart bool
}

// New returns a Verifier reading keys through lookup, with rate limits
// enforced in process and no quota counter. now may be nil for time.Now.
func New(lookup Lookup, now func() time.Time) *Verifier {
	return NewWith(Options{Lookup: lookup, Now: now})
}

// localLimiterKeys bounds the default in-process limiter's memory.
const localLimiterKeys = 100_000

// NewWith returns a Verifier configured by o.
func NewWith(o Options) *Verifier {
	v := &Verifier{lookup: o.Lookup, limiter: o.Limiter, quotas: o.Quotas, now: o.Now, usage: o.Usage, pacer: o.Pacer}
	if v.now == nil {
		v.now = time.Now
	}
	v.ownStart = o.Now != nil && o.Pacer != nil
	if v.limiter == nil {
		v.limiter = ratelimit.NewLocal(localLimiterKeys)
	}
	return v
}

// quotaTimeout bounds counting one use in the store.
const quotaTimeout = 2 * time.Second

var errNoQuotaCounter = errors.New("key has a quota but no quota counter is configured")

// Verify answers whether req's secret may be used. A refusal is a Result, not
// an error; the error is reserved for "cannot tell" (the store is down), and
// the caller must then refuse.
func (v *Verifier) Verify(ctx context.Context, req Request) (verdict Result, err error) {
	if v.obs != nil {
		defer func() { v.obs.Verdict(req.Entry, verdict.Reason, err) }()
	}
	if v.usage != nil {
		defer func() {
			if verdict.KeyID != "" {
				v.usage.Used(verdict.KeyID, verdict.Reason)
			}
		}()
	}
	secret, err := keymat.Parse(req.Secret)
	if err != nil {
		return Result{Reason: ReasonMalformed}, nil
	}
	sum := secret.Sum()
	// A request is judged as of its arrival, and its refusal held from then.
	now := v.now()
	start := now
	if v.ownStart {
		start = time.Now()
	}
	k, err := v.lookup.ByHash(ctx, sum)
	if errors.Is(err, keys.ErrNotFound) {
		v.hold(ctx, start)
		return Result{Reason: ReasonNotFound}, nil
	}
	if err != nil {
		return Result{}, fmt.Errorf("look up key: %w", err)
	}
	if reason := judge(k, &sum, req, now); reason != ReasonValid {
		if held(reason) {
			v.hold(ctx, start)
		}
		// A refusal never carries the key: it must not reveal whose secret it was.
		return Result{Reason: reason, KeyID: k.ID}, nil
	}
	res := Result{Valid: true, Reason: ReasonValid, Key: k, KeyID: k.ID}
	// Limits last, and the rate limit before the quota: a request refused
	// for any other reason uses up neither, and one refused by the rate
	// limit uses no quota.
	if k.RateLimit.Set() {
		d, err := v.limiter.Allow(ctx, k.ID, k.RateLimit)
		if err != nil {
			return Result{}, fmt.Errorf("rate limit: %w", err)
		}
		res.Rate, res.HasRate = d, true
		if !d.Allowed {
			return Result{Reason: ReasonRateLimited, KeyID: k.ID, RetryAfter: d.RetryAfter, Rate: d, HasRate: true}, nil
		}
	}
	if k.Quota.Set() {
		if v.quotas == nil {
			return Result{}, errNoQuotaCounter
		}
		// Bounded like the caches' store reads: a hung store must not hold
		// the caller, who is better served by a prompt "cannot tell".
		qctx, cancel := context.WithTimeout(ctx, quotaTimeout)
		left, err := v.quotas.ConsumeQuota(qctx, k.ID, k.Quota, now)
		cancel()
		switch {
		case errors.Is(err, keys.ErrQuotaExceeded):
			out := Result{Reason: ReasonUsageExceeded, KeyID: k.ID, Rate: res.Rate, HasRate: res.HasRate, HasQuota: true}
			if _, next := k.Quota.Period(now); !next.IsZero() {
				out.RetryAfter = next.Sub(now)
			}
			return out, nil
		case errors.Is(err, keys.ErrNotFound):
			v.hold(ctx, start)
			return Result{Reason: ReasonNotFound}, nil // deleted since it was read
		case err != nil:
			return Result{}, fmt.Errorf("count use: %w", err)
		}
		res.RemainingUses, res.HasQuota = left, true
	}
	return res, nil
}

// judge checks everything that needs no counting. sum is the presented
// secret's hash: when it is not k.Hash, it is the secret a rotation
// replaced, valid only during its grace period.
func judge(k *keys.Key, sum *[32]byte, req Request, now time.Time) Reason {
	switch {
	case k.State != keys.StateActive:
		return ReasonDisabled
	case k.Expired(now):
		return ReasonExpired
	case string(k.Hash) != string(sum[:]) && !now.Before(k.PrevExpire):
		return ReasonExpired
	case req.Environment != "" && req.Environment != k.Environment:
		return ReasonWrongEnvironment
	case !k.AllowsIP(req.ClientIP):
		return ReasonIPNotAllowed
	}
	for _, s := range req.RequiredScopes {
		if !k.Grants(s) {
			return ReasonInsufficientScope
		}
	}
	return ReasonValid
}
