package cache

import (
	"sync"
	"sync/atomic"

	"github.com/keyward/keyward/internal/keys"
)

const shardCount = 64

// entry is one cached answer for a hash: a key, or "no such key" (key nil).
type entry struct {
	key     *keys.Key
	version int64
	expires int64 // clock reading after which the entry is not used
	size    int
}

// local is the in-process tier: sharded maps bounded in entries and bytes.
// Invalidation bumps a per-shard generation; a fill carries the generation it
// saw before its lookup and is refused if it changed meanwhile, so a lookup
// that raced a write can never plant the old state.
type local struct {
	shards     [shardCount]shard
	maxEntries int           // per shard
	maxBytes   int           // per shard
	epoch      atomic.Uint64 // bumped when everything is dropped
	entries    atomic.Int64
}

type shard struct {
	mu      sync.RWMutex
	m       map[[32]byte]*entry
	gen     uint64 // bumped by every invalidation in this shard
	pending map[[32]byte]int
	bytes   int
}

// stamp identifies the cache state a lookup started from.
type stamp struct{ epoch, gen uint64 }

func newLocal(maxEntries, maxBytes int) *local {
	l := &local{maxEntries: max(1, maxEntries/shardCount), maxBytes: max(1024, maxBytes/shardCount)}
	for i := range l.shards {
		l.shards[i].m = make(map[[32]byte]*entry)
		l.shards[i].pending = make(map[[32]byte]int)
	}
	return l
}

func (l *local) shard(h *[32]byte) *shard { return &l.shards[h[0]%shardCount] }

func (l *local) get(h *[32]byte, now int64) (*entry, bool) {
	s := l.shard(h)
	s.mu.RLock()
	e, ok := s.m[*h]
	s.mu.RUnlock()
	if !ok || now > e.expires {
		return nil, false
	}
	return e, true
}

func (l *local) stamp(h *[32]byte) stamp {
	s := l.shard(h)
	s.mu.RLock()
	g := s.gen
	s.mu.RUnlock()
	return stamp{epoch: l.epoch.Load(), gen: g}
}

// put caches e unless an invalidation or a newer version got there first, or
// a write to this hash is in progress.
func (l *local) put(h *[32]byte, e *entry, since stamp) {
	s := l.shard(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	if l.epoch.Load() != since.epoch || s.gen != since.gen || s.pending[*h] > 0 {
		return
	}
	if old, ok := s.m[*h]; ok {
		if old.version > e.version {
			return
		}
		s.bytes -= old.size
		l.entries.Add(-1)
	}
	// Make room by dropping arbitrary entries: Go's map order is randomised,
	// so this is random eviction, which keeps hits cheap (no LRU bookkeeping
	// on the read path) and is close to LRU for skewed workloads.
	for k, v := range s.m {
		if len(s.m) < l.maxEntries && s.bytes+e.size <= l.maxBytes {
			break
		}
		delete(s.m, k)
		s.bytes -= v.size
		l.entries.Add(-1)
	}
	s.m[*h] = e
	s.bytes += e.size
	l.entries.Add(1)
}

// invalidate drops h and refuses fills that started before.
func (l *local) invalidate(h *[32]byte) {
	s := l.shard(h)
	s.mu.Lock()
	s.gen++
	if old, ok := s.m[*h]; ok {
		delete(s.m, *h)
		s.bytes -= old.size
		l.entries.Add(-1)
	}
	s.mu.Unlock()
}

// begin and end bracket a write in the in-process-only mode: while a hash is
// pending no fill is cached for it, so a read of the pre-commit row cannot
// outlive the commit.
func (l *local) begin(h *[32]byte) {
	s := l.shard(h)
	s.mu.Lock()
	s.pending[*h]++
	s.mu.Unlock()
	l.invalidate(h)
}

func (l *local) end(h *[32]byte) {
	l.invalidate(h)
	s := l.shard(h)
	s.mu.Lock()
	if s.pending[*h]--; s.pending[*h] <= 0 {
		delete(s.pending, *h)
	}
	s.mu.Unlock()
}

// clear drops everything, e.g. after the invalidation stream was interrupted
// and messages may have been lost.
func (l *local) clear() {
	l.epoch.Add(1)
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		s.gen++
		l.entries.Add(-int64(len(s.m)))
		s.m = make(map[[32]byte]*entry)
		s.bytes = 0
		s.mu.Unlock()
	}
}

// sizeOf estimates an entry's memory, for the byte bound.
func sizeOf(k *keys.Key) int {
	n := 200
	if k == nil {
		return n
	}
	n += len(k.ID) + len(k.Name) + len(k.Description) + len(k.Environment) + len(k.Hash) + len(k.Start) + len(k.Last4)
	n += len(k.PrevHash) + len(k.PrevStart) + len(k.PrevLast4)
	n += 32 * len(k.AllowedCIDRs) // a netip.Prefix is 32 bytes
	for _, s := range k.Scopes {
		n += len(s) + 16
	}
	for a, b := range k.Metadata {
		n += len(a) + len(b) + 32
	}
	return n
}
