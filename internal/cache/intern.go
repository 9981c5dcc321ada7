package cache

import (
	"sync"

	"github.com/keyward/keyward/internal/keys"
)

// interned keeps one *keys.Key per (hash, version), so lookups answered by
// Redis or the store hand out the same snapshot again instead of decoding and
// rendering it on every call. This is safe without any coherence protocol:
// every write bumps the row's version in the same transaction, so a version
// names exactly one content. It caches no answer, only the decoding of one.
type interned struct {
	shards [16]internShard
	max    int // per shard
}

type internShard struct {
	mu sync.Mutex
	m  map[[32]byte]*keys.Key
}

func newInterned(max int) *interned {
	in := &interned{max: max/16 + 1}
	for i := range in.shards {
		in.shards[i].m = make(map[[32]byte]*keys.Key)
	}
	return in
}

func (in *interned) get(h *[32]byte, version int64) *keys.Key {
	s := &in.shards[h[1]%16]
	s.mu.Lock()
	k := s.m[*h]
	s.mu.Unlock()
	if k == nil || k.Version != version {
		return nil
	}
	return k
}

// intern returns the snapshot already held for k's hash and version, or
// holds k and returns it.
func (in *interned) intern(h *[32]byte, k *keys.Key) *keys.Key {
	s := &in.shards[h[1]%16]
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.m[*h]; old != nil && old.Version == k.Version {
		return old
	}
	if len(s.m) >= in.max {
		for victim := range s.m { // random eviction, as in the local tier
			delete(s.m, victim)
			break
		}
	}
	s.m[*h] = k
	return k
}
