package config

import (
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/abuse"
)

// abuseSettings configure what stands between guessed keys and the store
// (internal/abuse, docs/abuse.md).
type abuseSettings struct {
	// AbuseFailuresPerSecond and AbuseBurst are each client address's
	// budget of failed validations on the throttled surfaces.
	AbuseFailuresPerSecond int
	AbuseBurst             int
	// AbuseThrottleSurfaces name the throttled entry points: rest,
	// forward-auth, grpc, check; empty for none.
	AbuseThrottleSurfaces surfaceList
	// AbuseRefusalFloor is how long after its arrival a refusal of the key
	// itself is answered, at the earliest; 0 answers at once.
	AbuseRefusalFloor time.Duration
}

func (c *Config) abuseFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.AbuseFailuresPerSecond, "abuse-failures-per-second", 20, "failed key validations a client address may make a second on the throttled surfaces; more are answered 429 without a lookup (KEYWARD_ABUSE_FAILURES_PER_SECOND)")
	fs.IntVar(&c.AbuseBurst, "abuse-burst", 100, "failed key validations a client address may make at once before --abuse-failures-per-second applies (KEYWARD_ABUSE_BURST)")
	c.AbuseThrottleSurfaces = surfaceList{"rest", "forward-auth"}
	fs.Var(&c.AbuseThrottleSurfaces, "abuse-throttle-surfaces", "comma-separated entry points whose failed validations are throttled per client address: rest, forward-auth, grpc, check; none for none (KEYWARD_ABUSE_THROTTLE_SURFACES)")
	fs.DurationVar(&c.AbuseRefusalFloor, "abuse-refusal-floor", 5*time.Millisecond, "unknown, disabled, deleted and expired keys are refused this long after the request arrived, so that timing cannot tell them apart; keep it above the store's slowest lookups; 0: at once (KEYWARD_ABUSE_REFUSAL_FLOOR)")
}

func (c *Config) validateAbuse() []error {
	var errs []error
	if c.AbuseFailuresPerSecond < 1 || c.AbuseFailuresPerSecond > 1_000_000 {
		errs = append(errs, fmt.Errorf("--abuse-failures-per-second %d: want 1 to 1000000", c.AbuseFailuresPerSecond))
	}
	if c.AbuseBurst < 1 || c.AbuseBurst > 1_000_000 {
		errs = append(errs, fmt.Errorf("--abuse-burst %d: want 1 to 1000000", c.AbuseBurst))
	}
	if c.AbuseRefusalFloor < 0 || c.AbuseRefusalFloor > time.Second {
		errs = append(errs, fmt.Errorf("--abuse-refusal-floor %v: want 0 to 1s", c.AbuseRefusalFloor))
	}
	return errs
}

// AbuseSurfaces are the throttled surfaces (checked when parsed).
func (c *Config) AbuseSurfaces() []abuse.Surface {
	s, _ := abuse.ParseSurfaces(c.AbuseThrottleSurfaces)
	return s
}

// surfaceList is a comma-separated list of surface names, checked as it is set.
type surfaceList []string

func (l *surfaceList) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(*l, ",")
}

func (l *surfaceList) Set(v string) error {
	names := splitList(v)
	if _, err := abuse.ParseSurfaces(names); err != nil {
		return err
	}
	*l = names
	return nil
}
