package cache

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/keymat"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/store/sqlite"
	"github.com/keyward/keyward/internal/testenv"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// countingStore is the real SQLite store, with its reads counted.
type countingStore struct {
	store.Store
	reads atomic.Int64
	mu    sync.Mutex
	// gate, when set, holds every read until it is closed.
	gate chan struct{}
	// entered is signalled when a read starts.
	entered chan struct{}
}

func (s *countingStore) hooks(gate, entered chan struct{}) {
	s.mu.Lock()
	s.gate, s.entered = gate, entered
	s.mu.Unlock()
}

func newStore(t *testing.T) *countingStore {
	st, err := openBenchStore(t)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func openBenchStore(t testing.TB) (*countingStore, error) {
	st, err := sqlite.Open(context.Background(), t.TempDir()+"/k.db")
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { st.Close() })
	return &countingStore{Store: st}, nil
}

func (s *countingStore) lookup(ctx context.Context, h []byte) (*keys.Key, error) {
	s.reads.Add(1)
	k, err := s.Store.GetByHash(ctx, h)
	s.mu.Lock()
	gate, entered := s.gate, s.entered
	s.mu.Unlock()
	// Held after reading: the answer may be stale by the time it returns.
	if entered != nil {
		entered <- struct{}{}
	}
	if gate != nil {
		<-gate
	}
	return k, err
}

func (s *countingStore) addKey(t testing.TB) (*keys.Key, keymat.Secret) {
	t.Helper()
	sec, _ := keymat.Generate("live")
	id, _ := keys.NewID(time.Now())
	k, err := s.Create(context.Background(), &keys.Key{ID: id, Name: "k", Environment: "live", State: keys.StateActive,
		Hash: sec.Hash(), Start: sec.Start(), Last4: sec.Last4()}, "", store.Audit{Action: audit.ActionCreate})
	if err != nil {
		t.Fatal(err)
	}
	return k, sec
}

func namespace(t *testing.T) string {
	var b [6]byte
	rand.Read(b[:])
	return "test" + string(rune('a'+b[0]%26)) + string(rune('a'+b[1]%26)) + string(rune('a'+b[2]%26)) + string(rune('a'+b[3]%26)) + string(rune('a'+b[4]%26))
}

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.StopSharedRedisCluster()
	os.Exit(code)
}

// redisClient is a client of addrs: one address is a single node, several
// a Redis Cluster (go-redis picks the client by their number, as Keyward's
// --redis-addr does).
func redisClient(t testing.TB, addrs ...string) redis.UniversalClient {
	c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: addrs,
		DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond, PoolTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { c.Close() })
	return c
}

// redisBackends are the Redis deployments the Redis tier must work on: a
// single node (the shared one) and a three-node Redis Cluster, where every
// script's keys must hash to one slot and the invalidation channel is a
// sharded one.
var redisBackends = map[string]func(t testing.TB) redis.UniversalClient{
	"redis": func(t testing.TB) redis.UniversalClient { return redisClient(t, testenv.Redis(t)) },
	"cluster": func(t testing.TB) redis.UniversalClient {
		return redisClient(t, testenv.SharedRedisCluster(t).Addrs...)
	},
}

// modes are the tier combinations a deployment can run, each with Redis on
// every backend.
func modes(t *testing.T, st *countingStore) map[string]func(t *testing.T) *Cache {
	m := map[string]func(t *testing.T) *Cache{
		"local-only": func(t *testing.T) *Cache {
			return New(Options{Store: st.lookup, Local: true, Logger: quiet})
		},
	}
	for name, client := range redisBackends {
		m[name+"-and-local"] = func(t *testing.T) *Cache {
			return running(t, New(Options{Store: st.lookup, Local: true, Redis: client(t), Namespace: namespace(t), Logger: quiet}))
		}
		m[name+"-only"] = func(t *testing.T) *Cache {
			return running(t, New(Options{Store: st.lookup, Redis: client(t), Namespace: namespace(t), Logger: quiet}))
		}
	}
	return m
}

// running starts the invalidation stream and waits until the lease is fresh.
func running(t *testing.T, c *Cache) *Cache {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(5 * time.Second)
	for c.bus != nil && !c.bus.fresh(c.now()) {
		if time.Now().After(deadline) {
			t.Fatal("lease never became fresh")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return c
}

func TestNegativeCacheBoundsStoreReads(t *testing.T) {
	st := newStore(t)
	for name, open := range modes(t, st) {
		t.Run(name, func(t *testing.T) {
			c := open(t)
			st.reads.Store(0)
			const unknown = 300
			for round := 0; round < 5; round++ {
				for i := 0; i < unknown; i++ {
					var h [32]byte
					h[0], h[1], h[2] = byte(i), byte(i>>8), 0xEE
					if _, err := c.ByHash(context.Background(), h); !errors.Is(err, keys.ErrNotFound) {
						t.Fatalf("unknown hash: %v", err)
					}
				}
			}
			if got := st.reads.Load(); got != unknown {
				t.Fatalf("%d store reads for %d unknown keys looked up 5 times each; want one per key", got, unknown)
			}
		})
	}
}

func TestConcurrentMissesShareOneRead(t *testing.T) {
	st := newStore(t)
	_, sec := st.addKey(t)
	for name, open := range modes(t, st) {
		t.Run(name, func(t *testing.T) {
			c := open(t)
			if c.redis != nil {
				c.redis.c.Del(context.Background(), c.redis.key((*[32]byte)(sec.Hash())))
			}
			st.reads.Store(0)
			gate := make(chan struct{})
			st.hooks(gate, nil)
			defer st.hooks(nil, nil)
			var wg sync.WaitGroup
			for i := 0; i < 50; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if k, err := c.ByHash(context.Background(), sec.Sum()); err != nil || k.Name != "k" {
						t.Errorf("lookup: %v", err)
					}
				}()
			}
			time.Sleep(100 * time.Millisecond) // let them all queue behind the first read
			close(gate)
			wg.Wait()
			if got := st.reads.Load(); got != 1 {
				t.Fatalf("%d store reads for 50 concurrent misses; want 1", got)
			}
		})
	}
}

// TestWriteWinsOverARacingRead is the fill race: a lookup reads the old row,
// a write commits and returns, then the lookup tries to cache what it read.
// No later lookup may see the old row.
func TestWriteWinsOverARacingRead(t *testing.T) {
	st := newStore(t)
	for name, open := range modes(t, st) {
		t.Run(name, func(t *testing.T) {
			c := open(t)
			k, sec := st.addKey(t)
			gate, entered := make(chan struct{}), make(chan struct{}, 1)
			st.hooks(gate, entered)
			res := make(chan *keys.Key)
			go func() {
				got, _ := c.ByHash(context.Background(), sec.Sum())
				res <- got
			}()
			<-entered // the racing lookup has read the old row and is held before returning it
			st.hooks(nil, nil)
			err := c.Write(context.Background(), [][]byte{sec.Hash()}, func(ctx context.Context) ([]keys.Change, error) {
				_, after, err := st.Update(ctx, k.ID, func(k *keys.Key) error { k.State = keys.StateDisabled; return nil }, store.Audit{Action: audit.ActionDisable})
				if err != nil {
					return nil, err
				}
				return []keys.Change{{Hash: after.Hash, Key: after, Version: after.Version}}, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			close(gate)
			if got := <-res; got == nil || got.State != keys.StateActive {
				t.Fatal("the racing lookup should have read the old, active row")
			}
			for i := 0; i < 3; i++ {
				got, err := c.ByHash(context.Background(), sec.Sum())
				if err != nil {
					t.Fatal(err)
				}
				if got.State != keys.StateDisabled {
					t.Fatalf("lookup %d after the write returned saw state %v", i, got.State)
				}
			}
		})
	}
}

func TestRedisEntriesAreVersionGuarded(t *testing.T) {
	for name, client := range redisBackends {
		t.Run(name, func(t *testing.T) { testRedisEntriesAreVersionGuarded(t, client(t)) })
	}
}

func testRedisEntriesAreVersionGuarded(t *testing.T, c redis.UniversalClient) {
	r := &redisTier{c: c, names: namesFor(namespace(t)), ttl: time.Minute, negativeTTL: time.Second, pendingTTL: time.Minute, interned: newInterned(16)}
	ctx := context.Background()
	var h [32]byte
	rand.Read(h[:])
	v := func(n int64) *entry {
		return &entry{key: &keys.Key{ID: "key_x", Hash: h[:], Version: n}, version: n}
	}
	version := func() (int64, redisState) {
		e, st, err := r.get(ctx, &h)
		if err != nil {
			t.Fatal(err)
		}
		if e == nil {
			return -1, st
		}
		return e.version, st
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(r.fill(ctx, &h, v(5)))
	must(r.fill(ctx, &h, v(3)))
	if got, _ := version(); got != 5 {
		t.Fatalf("older fill replaced newer: version %d", got)
	}
	must(r.prepare(ctx, &h, "w1"))
	must(r.fill(ctx, &h, v(9)))
	if _, st := version(); st != redisPending {
		t.Fatalf("state %v while a write is pending", st)
	}
	must(r.prepare(ctx, &h, "w2"))
	must(r.finish(ctx, &h, "w1", v(6)))
	if _, st := version(); st != redisPending {
		t.Fatal("one writer's finish ended another writer's claim")
	}
	must(r.finish(ctx, &h, "w2", v(7)))
	if got, st := version(); st != redisHit || got != 7 {
		t.Fatalf("after both writers: version %d state %v, want 7 hit", got, st)
	}
	ttl, _ := c.PTTL(ctx, r.key(&h)).Result()
	if ttl <= 0 || ttl > time.Minute {
		t.Fatalf("TTL %v after the last writer finished", ttl)
	}
	// A tombstone (no key) at a newer version beats the snapshot.
	must(r.prepare(ctx, &h, "w3"))
	must(r.finish(ctx, &h, "w3", &entry{version: 8}))
	if e, st, _ := r.get(ctx, &h); st != redisHit || e.key != nil || e.version != 8 {
		t.Fatalf("tombstone not installed: %+v %v", e, st)
	}
	// An aborted write on a key with no entry leaves nothing behind.
	var fresh [32]byte
	rand.Read(fresh[:])
	must(r.prepare(ctx, &fresh, "w4"))
	must(r.finish(ctx, &fresh, "w4", nil))
	if n, _ := c.Exists(ctx, r.key(&fresh)).Result(); n != 0 {
		t.Fatal("aborted write left an entry")
	}
}

// TestLeaseLapseStopsTrust: when the invalidation stream stalls (Redis
// frozen), in-process copies stop being used within one lease, so a change
// this instance did not hear of cannot be served from its memory.
func TestLeaseLapseStopsTrust(t *testing.T) {
	t.Run("redis", func(t *testing.T) {
		rs := testenv.StartRedis(t)
		testLeaseLapseStopsTrust(t, redisClient(t, rs.Addr), rs.Pause, rs.Resume)
	})
	t.Run("cluster", func(t *testing.T) {
		rc := testenv.SharedRedisCluster(t)
		must := func(err error) {
			if err != nil {
				t.Fatal(err)
			}
		}
		testLeaseLapseStopsTrust(t, redisClient(t, rc.Addrs...), func() { must(rc.Pause()) }, func() { must(rc.Resume()) })
	})
}

func testLeaseLapseStopsTrust(t *testing.T, rc redis.UniversalClient, pause, resume func()) {
	st := newStore(t)
	c := running(t, New(Options{Store: st.lookup, Local: true, Redis: rc, Namespace: namespace(t), Logger: quiet}))
	k, sec := st.addKey(t)
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if _, err := c.ByHash(ctx, sec.Sum()); err != nil {
			t.Fatal(err)
		}
	}
	before := st.reads.Load()
	if _, err := c.ByHash(ctx, sec.Sum()); err != nil || st.reads.Load() != before {
		t.Fatal("warm key not served from process memory")
	}
	// Change the row behind the cache's back, as a writer on an instance
	// this one cannot hear would.
	if _, _, err := st.Update(ctx, k.ID, func(k *keys.Key) error { k.State = keys.StateDisabled; return nil }, store.Audit{Action: audit.ActionDisable}); err != nil {
		t.Fatal(err)
	}
	pause()
	defer resume()
	time.Sleep(c.o.Lease + 100*time.Millisecond)
	got, err := c.ByHash(ctx, sec.Sum())
	if err != nil {
		t.Fatalf("with Redis frozen, the store should answer: %v", err)
	}
	if got.State != keys.StateDisabled {
		t.Fatal("served a stale in-process copy after the lease lapsed")
	}
	resume()
	deadline := time.Now().Add(5 * time.Second)
	for !c.bus.fresh(c.now()) {
		if time.Now().After(deadline) {
			t.Fatal("lease did not recover after Redis resumed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestLocalTierIsBounded(t *testing.T) {
	l := newLocal(shardCount*4, 1<<30)
	for i := 0; i < 10_000; i++ {
		var h [32]byte
		rand.Read(h[:])
		l.put(&h, &entry{size: 300, expires: 1 << 62}, l.stamp(&h))
	}
	if n := l.entries.Load(); n > shardCount*4 || n < shardCount*2 {
		t.Fatalf("%d entries held, bound %d", n, shardCount*4)
	}
	b := newLocal(1<<20, shardCount*2048)
	for i := 0; i < 10_000; i++ {
		var h [32]byte
		rand.Read(h[:])
		b.put(&h, &entry{size: 500, expires: 1 << 62}, b.stamp(&h))
	}
	for i := range b.shards {
		if b.shards[i].bytes > 2048 {
			t.Fatalf("shard %d holds %d bytes, bound 2048", i, b.shards[i].bytes)
		}
	}
}

// ackObserver counts invalidations by whether every receiver acknowledged,
// and in-process hits.
type ackObserver struct {
	acked, waitedOut, localHits atomic.Int64
}

func (o *ackObserver) Lookup(t Tier, r Result) {
	if t == TierLocal && r == Hit {
		o.localHits.Add(1)
	}
}

func (o *ackObserver) Invalidation(_ time.Duration, acked bool) {
	if acked {
		o.acked.Add(1)
	} else {
		o.waitedOut.Add(1)
	}
}

// TestInvalidationReachesEveryInstance: two instances share a Redis (a
// single node or a cluster); a write through one drops the other's
// in-process copy before it returns, and is acknowledged by both (the
// sharded channel and the acknowledgements live on one shard, so SPUBLISH's
// receiver count is right) rather than waited out.
func TestInvalidationReachesEveryInstance(t *testing.T) {
	st := newStore(t)
	for name, client := range redisBackends {
		t.Run(name, func(t *testing.T) {
			ns := namespace(t)
			obs, bObs := &ackObserver{}, &ackObserver{}
			a := running(t, New(Options{Store: st.lookup, Local: true, Redis: client(t), Namespace: ns, Logger: quiet, Observer: obs}))
			b := running(t, New(Options{Store: st.lookup, Local: true, Redis: client(t), Namespace: ns, Logger: quiet, Observer: bObs}))
			ctx := context.Background()
			for round := range 5 {
				k, sec := st.addKey(t)
				for _, c := range []*Cache{a, b, a, b} {
					if _, err := c.ByHash(ctx, sec.Sum()); err != nil {
						t.Fatal(err)
					}
				}
				hits := bObs.localHits.Load()
				if got, err := b.ByHash(ctx, sec.Sum()); err != nil || got.State != keys.StateActive || bObs.localHits.Load() != hits+1 {
					t.Fatalf("round %d: warm key not served from b's memory", round)
				}
				err := a.Write(ctx, [][]byte{sec.Hash()}, func(ctx context.Context) ([]keys.Change, error) {
					_, after, err := st.Update(ctx, k.ID, func(k *keys.Key) error { k.State = keys.StateDisabled; return nil }, store.Audit{Action: audit.ActionDisable})
					if err != nil {
						return nil, err
					}
					return []keys.Change{{Hash: after.Hash, Key: after, Version: after.Version}}, nil
				})
				if err != nil {
					t.Fatal(err)
				}
				for _, c := range []*Cache{b, a} {
					if got, err := c.ByHash(ctx, sec.Sum()); err != nil || got.State != keys.StateDisabled {
						t.Fatalf("round %d: after the write returned: %v %v", round, got, err)
					}
				}
			}
			if obs.acked.Load() != 5 || obs.waitedOut.Load() != 0 {
				t.Fatalf("invalidations: %d acknowledged by every instance, %d waited out; want 5 and 0",
					obs.acked.Load(), obs.waitedOut.Load())
			}
		})
	}
}
