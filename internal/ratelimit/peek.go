package ratelimit

import (
	"hash/maphash"
	"time"

	"github.com/keyward/keyward/internal/keys"
)

// Peek and Refund serve callers that learn only after the fact whether a
// request should count against a limit (internal/abuse counts failed
// validations, known only once the key was looked up): they look without
// counting, or count first and give the request back when it turns out not
// to count.

// Peek is what Allow would decide for keyID now, without counting the
// request. Its only error is ErrInvalidLimit.
func (l *Local) Peek(keyID string, rl keys.RateLimit) (Decision, error) {
	p, err := paramsOf(rl)
	if err != nil {
		return Decision{}, err
	}
	s := l.shardOf(keyID)
	s.mu.Lock()
	now := l.now().Sub(l.origin).Microseconds() // under the lock, as Allow reads it
	tat, ok := s.tat[keyID]
	s.mu.Unlock()
	if !ok {
		tat = now
	}
	_, d := p.step(tat, now)
	return d, nil
}

// Refund gives back one request that Allow allowed for keyID under rl. A
// key forgotten meanwhile (makeRoom) has nothing to give back. Its only
// error is ErrInvalidLimit.
func (l *Local) Refund(keyID string, rl keys.RateLimit) error {
	p, err := paramsOf(rl)
	if err != nil {
		return err
	}
	s := l.shardOf(keyID)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := l.now().Sub(l.origin).Microseconds()
	tat, ok := s.tat[keyID]
	if !ok {
		return nil
	}
	if tat -= p.interval; tat <= now {
		delete(s.tat, keyID) // a TAT in the past means the same as none
	} else {
		s.tat[keyID] = tat
	}
	return nil
}

func (l *Local) shardOf(keyID string) *localShard {
	return &l.shards[maphash.String(l.seed, keyID)%uint64(len(l.shards))]
}

// NewLocalWithClock is NewLocal reading time from now (which must be
// monotonic), for tests of callers.
func NewLocalWithClock(maxKeys int, now func() time.Time) *Local { return newLocal(maxKeys, now) }

// Len is how many keys are held, for metrics: at most about maxKeys.
func (l *Local) Len() int { return l.len() }
