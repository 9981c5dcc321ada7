package cache

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"

	"github.com/keyward/keyward/internal/keys"
)

// StoreLookup reads the source of truth by hash; keys.ErrNotFound for none.
type StoreLookup func(ctx context.Context, hash []byte) (*keys.Key, error)

// Options configures a Cache. The zero durations get the defaults below.
type Options struct {
	Store StoreLookup
	// Redis is the shared tier and invalidation channel; nil for none.
	Redis redis.UniversalClient
	// Namespace separates deployments sharing one Redis; default "kw".
	Namespace string
	// Local enables the in-process tier. Without Redis it is coherent only
	// for a single instance (the embedded default); the caller decides.
	Local             bool
	LocalEntries      int
	LocalBytes        int
	TTL               time.Duration // positive entries, both tiers
	NegativeTTL       time.Duration // "no such key", both tiers
	Lease             time.Duration
	HeartbeatInterval time.Duration
	StoreTimeout      time.Duration // bound of one store lookup; default 2s
	Logger            *slog.Logger
	// Observer learns of lookups and invalidations, for metrics; nil for none.
	Observer Observer
}

// Cache is the tiered lookup behind Validate and the write coordinator the
// key service calls around every write.
type Cache struct {
	o     Options
	store StoreLookup
	obs   Observer
	// local holds in-process entries when keep is set; in Redis mode it
	// exists either way, for the generations that invalidations bump.
	local    *local
	keep     bool
	redis    *redisTier
	bus      *bus
	flight   singleflight.Group
	interned *interned
	start    time.Time
	log      *slog.Logger
	skipRed  atomic.Int64 // clock reading until which Redis is skipped after an error
}

// New builds a Cache; call Run to start the invalidation stream when Redis is set.
func New(o Options) *Cache {
	if o.TTL == 0 {
		o.TTL = 10 * time.Minute
	}
	if o.NegativeTTL == 0 {
		o.NegativeTTL = 5 * time.Second
	}
	if o.Lease == 0 {
		o.Lease = 250 * time.Millisecond
	}
	if o.HeartbeatInterval == 0 {
		o.HeartbeatInterval = 50 * time.Millisecond
	}
	if o.StoreTimeout == 0 {
		o.StoreTimeout = 2 * time.Second
	}
	if o.LocalEntries == 0 {
		o.LocalEntries = 100_000
	}
	if o.LocalBytes == 0 {
		o.LocalBytes = 256 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Namespace == "" {
		o.Namespace = "kw"
	}
	if o.Observer == nil {
		o.Observer = nopObserver{}
	}
	c := &Cache{o: o, store: o.Store, obs: o.Observer, start: time.Now(), log: o.Logger, interned: newInterned(o.LocalEntries)}
	if o.Local || o.Redis != nil {
		c.local = newLocal(o.LocalEntries, o.LocalBytes)
		c.keep = o.Local
	}
	if o.Redis != nil {
		// Pending markers outlive any store statement (bounded by the write
		// timeout) by far; if a writer dies, its marker lapses and readers
		// fill from the store again.
		n := namesFor(o.Namespace)
		c.redis = &redisTier{c: o.Redis, names: n, interned: c.interned, ttl: o.TTL, negativeTTL: o.NegativeTTL, pendingTTL: 2 * time.Minute}
		c.bus = newBus(o.Redis, n, c.local, c.now, o.Lease, o.HeartbeatInterval, o.Logger)
		c.bus.obs = o.Observer
	}
	return c
}

// now is a monotonic clock reading in nanoseconds. Only differences of it
// are used, never compared with another machine's.
func (c *Cache) now() int64 { return int64(time.Since(c.start)) }

// Run keeps the invalidation stream until ctx ends; it returns at once without Redis.
func (c *Cache) Run(ctx context.Context) {
	if c.bus != nil {
		c.bus.run(ctx)
	}
}

// coherent reports whether every invalidation that matters has reached this
// process: always in the in-process-only mode (all writes are local), and in
// Redis mode while the lease is fresh. Only then may lookups trust in-process
// copies, or share a store read with a lookup that started earlier.
func (c *Cache) coherent(now int64) bool {
	if c.bus != nil {
		return c.bus.fresh(now)
	}
	return c.local != nil
}

// ByHash finds the key for a secret's hash through the tiers.
func (c *Cache) ByHash(ctx context.Context, h [32]byte) (*keys.Key, error) {
	now := c.now()
	if !c.coherent(now) {
		if c.keep {
			c.obs.Lookup(TierLocal, Bypass)
		}
		return c.alone(ctx, h)
	}
	if c.keep {
		if e, ok := c.local.get(&h, now); ok {
			c.obs.Lookup(TierLocal, Hit)
			return found(e)
		}
		c.obs.Lookup(TierLocal, Miss)
	}
	return c.shared(ctx, h)
}

// alone looks up without trusting or sharing anything in process.
func (c *Cache) alone(ctx context.Context, h [32]byte) (*keys.Key, error) {
	res, err := c.miss(ctx, &h)
	if err != nil {
		return nil, err
	}
	if res.pending {
		if res.e, err = c.fromStore(ctx, &h); err != nil {
			return nil, err
		}
	}
	return found(res.e)
}

// shared is the miss path. It and alone are functions of their own so that
// the hit path above keeps h on the stack: what they do makes it escape.
func (c *Cache) shared(ctx context.Context, h [32]byte) (*keys.Key, error) {
	// Only lookups that started from the same cache state share a flight: a
	// lookup starting after an invalidation must not get an older read.
	st := c.local.stamp(&h)
	var kb [48]byte
	copy(kb[:32], h[:])
	binary.LittleEndian.PutUint64(kb[32:], st.epoch)
	binary.LittleEndian.PutUint64(kb[40:], st.gen)
	flightKey := string(kb[:])
	v, err, shared := c.flight.Do(flightKey, func() (any, error) { return c.miss(ctx, &h) })
	if err != nil && shared && ctx.Err() == nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		// The lookup this one joined was cut short by its own caller's
		// context (a client that gave up): that is no answer for this
		// caller, who is still waiting. Look up alone.
		var r missResult
		r, err = c.miss(ctx, &h)
		v = r
	}
	if err != nil {
		return nil, err
	}
	res := v.(missResult)
	if res.pending {
		// A write to this hash is in progress. Its commit may land at any
		// moment, so a store read started for another lookup may already be
		// out of date for this one: read on our own, cache nothing.
		e, err := c.fromStore(ctx, &h)
		if err != nil {
			return nil, err
		}
		return found(e)
	}
	if c.keep && res.cacheable {
		e := *res.e
		ttl := c.o.TTL
		if e.key == nil {
			ttl = c.o.NegativeTTL
		}
		e.expires = c.now() + int64(ttl)
		c.local.put(&h, &e, st)
	}
	return found(res.e)
}

func found(e *entry) (*keys.Key, error) {
	if e.key == nil {
		return nil, keys.ErrNotFound
	}
	return e.key, nil
}

type missResult struct {
	e         *entry
	cacheable bool
	pending   bool // a write to this hash is in progress: e is nil, read the store
}

func (c *Cache) miss(ctx context.Context, h *[32]byte) (missResult, error) {
	if c.redis != nil && c.now() >= c.skipRed.Load() {
		e, state, err := c.redis.get(ctx, h)
		switch {
		case err != nil:
			c.obs.Lookup(TierRedis, Error)
			c.redisFailed(ctx, err)
		case state == redisHit:
			c.obs.Lookup(TierRedis, Hit)
			return missResult{e: e, cacheable: true}, nil
		case state == redisPending:
			c.obs.Lookup(TierRedis, Bypass)
			return missResult{pending: true}, nil
		default:
			c.obs.Lookup(TierRedis, Miss)
			e, err := c.fromStore(ctx, h)
			if err != nil {
				return missResult{}, err
			}
			if err := c.redis.fill(ctx, h, e); err != nil {
				c.redisFailed(ctx, err)
			}
			return missResult{e: e, cacheable: true}, nil
		}
	}
	e, err := c.fromStore(ctx, h)
	// With Redis configured but not answering, the read could not see a
	// write's pending marker, so it may predate a commit that has already
	// been announced: it must not be cached. Without Redis, the in-process
	// tier has its own pending marks (local.begin) and may keep it.
	return missResult{e: e, cacheable: err == nil && c.redis == nil}, err
}

func (c *Cache) fromStore(ctx context.Context, h *[32]byte) (*entry, error) {
	// A stalled store must turn into Unavailable, not into a wait as long
	// as the caller's deadline (which may be none).
	sctx, cancel := context.WithTimeout(ctx, c.o.StoreTimeout)
	defer cancel()
	k, err := c.store(sctx, h[:])
	if err != nil && ctx.Err() == nil && sctx.Err() != nil {
		err = fmt.Errorf("%w: store lookup timed out after %v", keys.ErrUnavailable, c.o.StoreTimeout)
	}
	if errors.Is(err, keys.ErrNotFound) {
		c.obs.Lookup(TierStore, Miss)
		return &entry{size: sizeOf(nil)}, nil // version 0: any real write is newer
	}
	if err != nil {
		c.obs.Lookup(TierStore, Error)
		return nil, err
	}
	c.obs.Lookup(TierStore, Hit)
	k = c.interned.intern(h, k)
	return &entry{key: k, version: k.Version, size: sizeOf(k)}, nil
}

// redisFailed makes lookups skip Redis for a moment, so an outage costs one
// timeout per second rather than one per request.
func (c *Cache) redisFailed(ctx context.Context, err error) {
	if c.skipRed.Swap(c.now()+int64(time.Second)) < c.now() {
		c.log.WarnContext(ctx, "redis unavailable; validating from the store", "err", err)
	}
}

// Write runs commit, the store write, so that no instance can serve a cached
// answer for hashes that the write makes stale:
//
//  1. before commit, each hash is marked pending in Redis (readers bypass
//     every cache for it) and every instance drops its copy and acknowledges
//     (or its lease lapses); if this fails, commit is not run and the error
//     wraps keys.ErrUnavailable;
//  2. commit runs and reports what the hashes resolve to now;
//  3. the changes replace the markers;
//  4. if a marker was gone by then (Redis restarted empty, failed over or
//     evicted it), another instance may have cached the row as it was before
//     the commit meanwhile, so the invalidation is announced again.
//
// If commit fails with keys.ErrUnavailable, or after ctx ended (a client
// that gave up, while COMMIT was on its way), its outcome is unknown, so the
// markers stay until they lapse and readers keep going to the store. If
// commit succeeds but steps 3 and 4 cannot be completed within about a
// second, the error wraps keys.ErrUnavailable although the write is made:
// it is not known to be in force everywhere, and repeating it confirms it.
// This is the one place cache invalidation happens.
func (c *Cache) Write(ctx context.Context, hashes [][]byte, commit func(context.Context) ([]keys.Change, error)) error {
	w, err := c.begin(ctx, hashes)
	if err != nil {
		return err
	}
	changes, err := commit(ctx)
	switch {
	case err == nil:
		return w.confirm(ctx, changes)
	case errors.Is(err, keys.ErrUnavailable) || ctx.Err() != nil:
		// Not "surely not written": a COMMIT sent before the connection
		// broke, or before ctx ended, may have been applied. Ending the
		// claims with no change would let the old snapshot in Redis be
		// served again as if it were current.
		c.log.WarnContext(ctx, MsgOutcomeUnknown)
		w.abandon()
	default:
		w.finish(ctx, nil)
	}
	return err
}

// MsgOutcomeUnknown is logged when a write's commit failed in a way that
// leaves its outcome unknown (a connection broken during COMMIT): it may
// have been applied, whole, though the call fails.
const MsgOutcomeUnknown = "write outcome unknown; its cache entries stay bypassed until their markers lapse"

// MsgUnconfirmed is logged when a committed write could not be confirmed in
// the caches and is answered with an error wrapping keys.ErrUnavailable.
const MsgUnconfirmed = "write committed but not confirmed in the caches; answered unavailable"

// confirm ends a committed write: its snapshots replace the markers and, if
// a marker was lost meanwhile, the invalidation is announced again. Redis
// errors are retried for about a second (a restart or a failover).
func (w *write) confirm(ctx context.Context, changes []keys.Change) error {
	c := w.c
	intact, err := w.finish(ctx, changes)
	for try := 0; err != nil && try < 10; try++ {
		// The commit's snapshot must be in Redis (it replaces whatever a
		// reader filled meanwhile) before anyone is told to drop theirs.
		time.Sleep(100 * time.Millisecond)
		var again bool
		again, err = w.finish(ctx, changes)
		intact = intact && again
	}
	if err == nil && !intact {
		c.log.WarnContext(ctx, "redis lost a write's pending marker; announcing its invalidation again")
		err = c.bus.invalidate(context.WithoutCancel(ctx), w.hashes)
	}
	if err != nil {
		c.log.WarnContext(ctx, MsgUnconfirmed, "err", err)
		return fmt.Errorf("%w: the write is committed, but could not be confirmed in the caches; repeat it: %w", keys.ErrUnavailable, err)
	}
	return nil
}

// write is a write in progress.
type write struct {
	c        *Cache
	token    string
	hashes   [][32]byte
	finished []bool // by finish, per hash
}

func (c *Cache) begin(ctx context.Context, hashes [][]byte) (*write, error) {
	w := &write{c: c}
	for _, h := range hashes {
		if len(h) == 32 {
			w.hashes = append(w.hashes, [32]byte(h))
		}
	}
	if c.redis == nil {
		if c.local != nil {
			for i := range w.hashes {
				c.local.begin(&w.hashes[i])
			}
		}
		return w, nil
	}
	var tok [12]byte
	rand.Read(tok[:])
	w.token = hex.EncodeToString(tok[:])
	for i := range w.hashes {
		if err := c.redis.prepare(ctx, &w.hashes[i], w.token); err != nil {
			w.finish(ctx, nil)
			return nil, fmt.Errorf("%w: cache coordination: %w", keys.ErrUnavailable, err)
		}
	}
	if err := c.bus.invalidate(ctx, w.hashes); err != nil {
		w.finish(ctx, nil)
		return nil, fmt.Errorf("%w: cache coordination: %w", keys.ErrUnavailable, err)
	}
	return w, nil
}

// finish ends the write: with changes after a commit, with none after a
// write that surely did not happen. It reports whether every marker was
// still in place, and the first error.
func (w *write) finish(ctx context.Context, changes []keys.Change) (intact bool, err error) {
	c := w.c
	if c.redis == nil {
		if c.local != nil {
			for i := range w.hashes {
				c.local.end(&w.hashes[i])
			}
		}
		return true, nil
	}
	ctx = context.WithoutCancel(ctx)
	intact = true
	if w.finished == nil {
		w.finished = make([]bool, len(w.hashes))
	}
	for i := range w.hashes {
		if w.finished[i] {
			continue // by an earlier call
		}
		h := &w.hashes[i]
		var e *entry
		for _, ch := range changes {
			if len(ch.Hash) == 32 && [32]byte(ch.Hash) == *h {
				e = &entry{key: ch.Key, version: ch.Version}
			}
		}
		// A failure leaves the marker to lapse; readers use the store meanwhile.
		had, ferr := c.redis.finishClaim(ctx, h, w.token, e)
		if ferr != nil {
			c.log.WarnContext(ctx, "could not finish a cache write; its marker will lapse", "err", ferr)
			if err == nil {
				err = ferr
			}
			continue
		}
		w.finished[i] = true
		intact = intact && had
	}
	return intact, err
}

// abandon leaves the markers in place. In process, a pending count would
// never lapse, so the in-process-only mode ends the write but drops the hashes.
func (w *write) abandon() {
	if w.c.redis == nil && w.c.local != nil {
		for i := range w.hashes {
			w.c.local.end(&w.hashes[i])
		}
	}
}
