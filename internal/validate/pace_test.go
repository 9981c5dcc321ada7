package validate_test

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/keymat"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/validate"
)

type mapLookup map[[32]byte]*keys.Key

func (m mapLookup) ByHash(_ context.Context, h [32]byte) (*keys.Key, error) {
	if k, ok := m[h]; ok {
		return k, nil
	}
	return nil, keys.ErrNotFound
}

// recordingPacer records the starts it is asked to hold.
type recordingPacer struct {
	mu     sync.Mutex
	starts []time.Time
}

func (p *recordingPacer) Hold(_ context.Context, start time.Time) {
	p.mu.Lock()
	p.starts = append(p.starts, start)
	p.mu.Unlock()
}

func (p *recordingPacer) take() []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.starts
	p.starts = nil
	return out
}

// TestPacerHoldsRefusalsOfTheKey: unknown, disabled, expired and address
// refusals are held from the request's arrival; valid keys, malformed ones
// and refusals of an active key are not.
func TestPacerHoldsRefusalsOfTheKey(t *testing.T) {
	fake := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) // a fake clock: the pacer must get a real reading
	lookup := mapLookup{}
	add := func(k *keys.Key) string {
		s, err := keymat.Generate("live")
		if err != nil {
			t.Fatal(err)
		}
		k.Hash, k.Environment = s.Hash(), "live"
		lookup[s.Sum()] = k
		return s.String()
	}
	active := add(&keys.Key{ID: "key_A", State: keys.StateActive, Scopes: []string{"a"}, RateLimit: keys.RateLimit{Limit: 1, Burst: 1, Period: time.Hour}})
	disabled := add(&keys.Key{ID: "key_D", State: keys.StateDisabled})
	expired := add(&keys.Key{ID: "key_E", State: keys.StateActive, ExpireTime: fake.Add(-time.Second)})
	fenced := add(&keys.Key{ID: "key_F", State: keys.StateActive, AllowedCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	unknown, _ := keymat.Generate("live")

	p := &recordingPacer{}
	v := validate.NewWith(validate.Options{Lookup: lookup, Now: func() time.Time { return fake }, Pacer: p})
	for _, c := range []struct {
		name   string
		req    validate.Request
		reason validate.Reason
		held   bool
	}{
		{"ok/valid", validate.Request{Secret: active}, validate.ReasonValid, false},
		{"refused/rate-limited", validate.Request{Secret: active}, validate.ReasonRateLimited, false},
		{"refused/scope", validate.Request{Secret: active, RequiredScopes: []string{"b"}}, validate.ReasonInsufficientScope, false},
		{"refused/environment", validate.Request{Secret: active, Environment: "test"}, validate.ReasonWrongEnvironment, false},
		{"refused/malformed", validate.Request{Secret: "kw_live_nope"}, validate.ReasonMalformed, false},
		{"refused/not-found", validate.Request{Secret: unknown.String()}, validate.ReasonNotFound, true},
		{"refused/disabled", validate.Request{Secret: disabled}, validate.ReasonDisabled, true},
		{"refused/expired", validate.Request{Secret: expired}, validate.ReasonExpired, true},
		{"refused/ip", validate.Request{Secret: fenced, ClientIP: netip.MustParseAddr("192.0.2.1")}, validate.ReasonIPNotAllowed, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := time.Now()
			res, err := v.Verify(context.Background(), c.req)
			if err != nil || res.Reason != c.reason {
				t.Fatalf("Verify: %v, %v; want %v", res.Reason, err, c.reason)
			}
			starts := p.take()
			if !c.held {
				if len(starts) != 0 {
					t.Errorf("held %d times, want never", len(starts))
				}
				return
			}
			if len(starts) != 1 {
				t.Fatalf("held %d times, want once", len(starts))
			}
			if s := starts[0]; s.Before(before) || s.After(time.Now()) {
				t.Errorf("held from %v, not a real reading taken during the call", s)
			}
		})
	}
}
