package cache

import "time"

// Tier names where a lookup was answered, for observers.
type Tier uint8

const (
	TierLocal Tier = iota // the in-process map
	TierRedis             // the shared Redis tier
	TierStore             // the source of truth
	NumTiers
)

func (t Tier) String() string {
	switch t {
	case TierLocal:
		return "local"
	case TierRedis:
		return "redis"
	}
	return "store"
}

// Result is what one tier made of one lookup.
type Result uint8

const (
	// Hit: the tier answered (for the store: the key exists).
	Hit Result = iota
	// Miss: the tier did not know (for the store: no such key, an answer too).
	Miss
	// Bypass: the tier was not trusted for this lookup: in process while the
	// lease is not fresh, in Redis while a write to the hash is in progress.
	Bypass
	// Error: the tier failed; the lookup went on to the next tier (Redis) or
	// failed closed (the store).
	Error
	NumResults
)

func (r Result) String() string {
	switch r {
	case Hit:
		return "hit"
	case Miss:
		return "miss"
	case Bypass:
		return "bypass"
	}
	return "error"
}

// Observer learns what the cache does, for metrics. Lookup is called on the
// hot path: it must be cheap and safe for concurrent use. Lookups that share
// one flight (concurrent misses of one hash) are reported once, by the tier
// that was actually asked.
type Observer interface {
	Lookup(t Tier, r Result)
	// Invalidation reports one published invalidation: how long the writer
	// waited from publishing until every receiving instance acknowledged
	// (acked) or, without all acknowledgements, until the silent instances'
	// leases had surely lapsed (acked false).
	Invalidation(wait time.Duration, acked bool)
}

type nopObserver struct{}

func (nopObserver) Lookup(Tier, Result)              {}
func (nopObserver) Invalidation(time.Duration, bool) {}

// LeaseAge is how old the proof behind this instance's lease is: the time
// since it sent the latest heartbeat that has come back through the
// invalidation stream. In-process copies are trusted only while it is under
// the lease. ok is false while no heartbeat has come back on the current
// subscription (in-process copies are then not trusted), and always without
// Redis, where there is no lease.
func (c *Cache) LeaseAge() (age time.Duration, ok bool) {
	if c.bus == nil {
		return 0, false
	}
	s := c.bus.confirmed.Load()
	if s < 0 {
		return 0, false
	}
	return time.Duration(c.now() - s), true
}
