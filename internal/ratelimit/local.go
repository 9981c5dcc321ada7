package ratelimit

import (
	"context"
	"hash/maphash"
	"slices"
	"sync"
	"time"

	"github.com/keyward/keyward/internal/keys"
)

// Local enforces limits in process: for a single instance (the embedded
// mode), or per instance while Redis is down. It holds at most about maxKeys
// TATs; see makeRoom for what it forgets first.
type Local struct {
	now      func() time.Time
	origin   time.Time // TATs are µs since origin, on the monotonic clock
	seed     maphash.Seed
	shards   []localShard
	perShard int
}

type localShard struct {
	mu  sync.Mutex
	tat map[string]int64
	_   [48]byte // one shard per cache line: Allow always writes
}

// maxLocalShards bounds lock contention; small limiters get fewer shards so
// that maxKeys is a close bound.
const maxLocalShards = 64

// NewLocal returns an in-process limiter remembering at most maxKeys keys
// (100,000 if maxKeys < 1).
func NewLocal(maxKeys int) *Local { return newLocal(maxKeys, time.Now) }

// newLocal is NewLocal with a clock, for tests.
func newLocal(maxKeys int, now func() time.Time) *Local {
	if maxKeys < 1 {
		maxKeys = 100_000
	}
	n := min(maxLocalShards, max(1, maxKeys/64))
	l := &Local{now: now, origin: now(), seed: maphash.MakeSeed(), shards: make([]localShard, n), perShard: maxKeys / n}
	for i := range l.shards {
		l.shards[i].tat = make(map[string]int64)
	}
	return l
}

// Allow implements Limiter; its only error is ErrInvalidLimit.
func (l *Local) Allow(_ context.Context, keyID string, rl keys.RateLimit) (Decision, error) {
	p, err := paramsOf(rl)
	if err != nil {
		return Decision{}, err
	}
	s := &l.shards[maphash.String(l.seed, keyID)%uint64(len(l.shards))]
	s.mu.Lock()
	defer s.mu.Unlock()
	// Read the clock under the lock, so a shard's times never go back: a
	// TAT written at a later now would otherwise look beyond the limit's
	// capacity to a call holding an earlier one, which would cut it (step)
	// and let extra requests through.
	now := l.now().Sub(l.origin).Microseconds()
	tat, ok := s.tat[keyID]
	if !ok {
		tat = now
	}
	newTAT, d := p.step(tat, now)
	if d.Allowed || newTAT != tat { // a refusal stores only a TAT cut to a changed limit
		if !ok && len(s.tat) >= l.perShard {
			s.makeRoom(now, l.perShard)
		}
		s.tat[keyID] = newTAT
	}
	return d, nil
}

// makeRoom frees slots in a full shard. First go the TATs in the past: they
// mean the same as no entry. If that frees too little, the live entries with
// the earliest TATs go too — those closest to a full burst anyway, so
// forgetting them forgives the least. Either way at least 1/16 of the shard
// is freed, so the O(n) sweep happens at most once per n/16 new keys.
func (s *localShard) makeRoom(now int64, capacity int) {
	for k, t := range s.tat {
		if t <= now {
			delete(s.tat, k)
		}
	}
	target := capacity - max(capacity/16, 1)
	excess := len(s.tat) - target
	if excess <= 0 {
		return
	}
	tats := make([]int64, 0, len(s.tat))
	for _, t := range s.tat {
		tats = append(tats, t)
	}
	slices.Sort(tats)
	cut := tats[excess-1] // evict everything before cut, and ties at cut until excess are gone
	ties := excess - (slices.Index(tats, cut))
	for k, t := range s.tat {
		if t < cut {
			delete(s.tat, k)
		} else if t == cut && ties > 0 {
			delete(s.tat, k)
			ties--
		}
	}
}

// len is the number of keys held, for tests.
func (l *Local) len() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.tat)
		s.mu.Unlock()
	}
	return n
}
