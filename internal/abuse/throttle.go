package abuse

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/ratelimit"
	"github.com/keyward/keyward/internal/validate"
)

// Surface is an entry point whose failed validations may be throttled.
type Surface uint8

const (
	// REST is POST /v1/keys:validate (through the gateway), keyed by the
	// HTTP client's address.
	REST Surface = iota
	// ForwardAuth is /v1/auth, keyed by the client address its IP
	// allow-lists use (the peer's, or with --trusted-proxy-hops an
	// X-Forwarded-For entry).
	ForwardAuth
	// GRPC is keyward.v1 Validate called over gRPC, keyed by the peer.
	GRPC
	// Check is Envoy's Check, keyed by the downstream address Envoy reports.
	Check
	// NumSurfaces counts the surfaces above.
	NumSurfaces
)

var surfaceNames = [NumSurfaces]string{REST: "rest", ForwardAuth: "forward-auth", GRPC: "grpc", Check: "check"}

// String is the surface's name in configuration and metric labels.
func (s Surface) String() string {
	if s < NumSurfaces {
		return surfaceNames[s]
	}
	return fmt.Sprintf("surface_%d", int(s))
}

// ParseSurfaces reads surface names (rest, forward-auth, grpc, check); the
// single name "none" is the empty list.
func ParseSurfaces(names []string) ([]Surface, error) {
	if len(names) == 1 && names[0] == "none" {
		return nil, nil
	}
	var out []Surface
	var errs []error
next:
	for _, n := range names {
		for s, name := range surfaceNames {
			if n == name {
				out = append(out, Surface(s))
				continue next
			}
		}
		errs = append(errs, fmt.Errorf("%q: want %s, or none", n, strings.Join(surfaceNames[:], ", ")))
	}
	return out, errors.Join(errs...)
}

// Failed reports whether a verdict with reason r counts against its
// address: a refusal of the presented key itself. Refusals of an active key
// (scope, environment, its own rate limit or quota) do not: whoever sends
// them holds a real key. An address refusal does, since with --auth-strict
// it is reported exactly like an unknown key.
func Failed(r validate.Reason) bool {
	switch r {
	case validate.ReasonNotFound, validate.ReasonMalformed, validate.ReasonDisabled,
		validate.ReasonExpired, validate.ReasonIPNotAllowed:
		return true
	}
	return false
}

// Options configures a Throttle. Zero values get the defaults noted.
type Options struct {
	// PerSecond is how many failed validations an address may make a
	// second (default 20), in bursts of up to Burst (default 100).
	PerSecond int
	Burst     int
	// Surfaces are the entry points throttled; none, none are.
	Surfaces []Surface
	// MaxAddresses bounds the addresses remembered (default 100,000, a few
	// MB): when full, those closest to a full budget are forgotten first.
	MaxAddresses int
	Logger       *slog.Logger
	now          func() time.Time // tests
}

// DefaultMaxAddresses is the default of Options.MaxAddresses.
const DefaultMaxAddresses = 100_000

// Throttle counts failed validations per client address. A nil *Throttle
// throttles nothing. It is safe for concurrent use.
type Throttle struct {
	limits  *ratelimit.Local
	rl      keys.RateLimit
	on      [NumSurfaces]bool
	reserve int64 // below this many failures left, Admit counts in advance
	log     *slog.Logger
	now     func() time.Time

	throttled [NumSurfaces]atomic.Uint64
	failures  [NumSurfaces]atomic.Uint64
	// lastLog and quiet rate-limit the log line about throttling.
	lastLog atomic.Int64
	quiet   atomic.Uint64
}

// New checks o and returns a Throttle.
func New(o Options) (*Throttle, error) {
	if o.PerSecond == 0 {
		o.PerSecond = 20
	}
	if o.Burst == 0 {
		o.Burst = 100
	}
	if o.MaxAddresses == 0 {
		o.MaxAddresses = DefaultMaxAddresses
	}
	if o.PerSecond < 1 || o.Burst < 1 || o.MaxAddresses < 1 {
		return nil, fmt.Errorf("abuse: rate %d/s, burst %d, %d addresses: want each at least 1", o.PerSecond, o.Burst, o.MaxAddresses)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	limits := ratelimit.NewLocal(o.MaxAddresses)
	if o.now != nil {
		limits = ratelimit.NewLocalWithClock(o.MaxAddresses, o.now)
	} else {
		o.now = time.Now
	}
	t := &Throttle{
		limits:  limits,
		rl:      keys.RateLimit{Limit: int64(o.PerSecond), Period: time.Second, Burst: int64(o.Burst)},
		reserve: int64(o.Burst) / 2,
		log:     o.Logger,
		now:     o.now,
	}
	for _, s := range o.Surfaces {
		if s >= NumSurfaces {
			return nil, fmt.Errorf("abuse: unknown surface %d", s)
		}
		t.on[s] = true
	}
	return t, nil
}

// On reports whether s is throttled.
func (t *Throttle) On(s Surface) bool { return t != nil && s < NumSurfaces && t.on[s] }

// Pass is an admitted request; Done must be called with its outcome. The
// zero Pass (from a surface that is not throttled) does nothing.
type Pass struct {
	t        *Throttle
	key      string
	s        Surface
	reserved bool // a failure was counted in advance
}

// Admit decides, before any lookup, whether a request from addr on s may
// proceed. If not, retryAfter is when the address may fail again. An
// unknown address (the zero Addr) shares one budget with every other.
//
// While an address has at least half its burst left, nothing is counted
// until Done learns the outcome, so valid keys cost nothing but a look. Below
// that, a failure is counted in advance and given back by Done if the
// request did not fail: concurrent requests then cannot overshoot the
// budget, however many an address sends at once.
func (t *Throttle) Admit(s Surface, addr netip.Addr) (p Pass, retryAfter time.Duration, ok bool) {
	if !t.On(s) {
		return Pass{}, 0, true
	}
	key := addrKey(addr)
	d, _ := t.limits.Peek(key, t.rl) // the limit is valid by construction
	if d.Allowed && d.Remaining < t.reserve {
		d, _ = t.limits.Allow(context.Background(), key, t.rl)
		if d.Allowed {
			return Pass{t: t, key: key, s: s, reserved: true}, 0, true
		}
	}
	if !d.Allowed {
		t.throttled[s].Add(1)
		t.logThrottled(s, addr)
		return Pass{}, max(d.RetryAfter, time.Millisecond), false
	}
	return Pass{t: t, key: key, s: s}, 0, true
}

// Blocked reports whether addr has no budget left on s, and until when,
// without admitting anything: for a cheaper refusal ahead of Admit (the
// HTTP listener answers a throttled REST client before the gateway parses
// its request). A blocked request counts as throttled.
func (t *Throttle) Blocked(s Surface, addr netip.Addr) (retryAfter time.Duration, blocked bool) {
	if !t.On(s) {
		return 0, false
	}
	d, _ := t.limits.Peek(addrKey(addr), t.rl)
	if d.Allowed {
		return 0, false
	}
	t.throttled[s].Add(1)
	t.logThrottled(s, addr)
	return max(d.RetryAfter, time.Millisecond), true
}

// Done records the outcome of an admitted request: failed if the key
// itself was refused (Failed), not for an error ("cannot tell").
func (p Pass) Done(failed bool) {
	t := p.t
	if t == nil {
		return
	}
	if failed {
		t.failures[p.s].Add(1)
		if !p.reserved {
			t.limits.Allow(context.Background(), p.key, t.rl)
		}
		return
	}
	if p.reserved {
		t.limits.Refund(p.key, t.rl)
	}
}

// Throttled is how many requests on s were answered without a lookup.
func (t *Throttle) Throttled(s Surface) uint64 { return t.throttled[s].Load() }

// Failures is how many failed validations on s were counted.
func (t *Throttle) Failures(s Surface) uint64 { return t.failures[s].Load() }

// Addresses is how many addresses are remembered (at most MaxAddresses).
func (t *Throttle) Addresses() int { return t.limits.Len() }

// logInterval spaces the lines saying that addresses are throttled.
const logInterval = 10 * time.Second

func (t *Throttle) logThrottled(s Surface, addr netip.Addr) {
	now, last := t.now().UnixNano(), t.lastLog.Load()
	if now-last < int64(logInterval) || !t.lastLog.CompareAndSwap(last, now) {
		t.quiet.Add(1)
		return
	}
	t.log.Warn("throttling failed API key validations: answering 429 without a lookup",
		"surface", s.String(), "address", describe(addr), "more_since_last_line", t.quiet.Swap(0))
}

// addrKey is the budget an address draws on: an IPv4 address, or the /64
// of an IPv6 one (a single host usually holds a whole /64).
func addrKey(a netip.Addr) string {
	a = a.Unmap()
	switch {
	case a.Is4():
		b := a.As4()
		return string([]byte{4, b[0], b[1], b[2], b[3]})
	case a.Is6():
		b := a.As16()
		return string(append([]byte{6}, b[:8]...))
	}
	return "" // unknown
}

// describe names addr's budget in a log line.
func describe(a netip.Addr) string {
	a = a.Unmap()
	switch {
	case a.Is4():
		return a.String()
	case a.Is6():
		p, _ := a.Prefix(64)
		return p.String()
	}
	return "unknown"
}
