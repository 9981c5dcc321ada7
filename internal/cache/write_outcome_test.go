package cache

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/testenv"
)

// TestWriteSurvivesRedisLosingItsMarker: Redis restarts, empty, while a
// write is between announcing its invalidation and committing. The restart
// takes the write's pending marker with it, so another instance, once it
// has resubscribed, fills Redis and its in-process tier from the store with
// the row as it was before the commit. When Write returns, that instance
// must see the write all the same: the writer notices that its marker is
// gone and announces the invalidation again before returning.
func TestWriteSurvivesRedisLosingItsMarker(t *testing.T) {
	rs := testenv.StartRedis(t)
	st := newStore(t)
	ns := namespace(t)
	writer := running(t, New(Options{Store: st.lookup, Local: true, Redis: redisClient(t, rs.Addr), Namespace: ns, Logger: quiet}))
	reader := running(t, New(Options{Store: st.lookup, Local: true, Redis: redisClient(t, rs.Addr), Namespace: ns, Logger: quiet}))
	k, sec := st.addKey(t)
	ctx := context.Background()

	// servedFromMemory looks the key up on the reader until it answers
	// from its in-process tier (after the restart its first lookups fail
	// over to the store for a moment and cache nothing), and returns it.
	servedFromMemory := func() *keys.Key {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			got, err := reader.ByHash(ctx, sec.Sum())
			if err != nil {
				t.Fatal(err)
			}
			before := st.reads.Load()
			again, err := reader.ByHash(ctx, sec.Sum())
			if err == nil && st.reads.Load() == before && again.Version == got.Version {
				return again
			}
			if time.Now().After(deadline) {
				t.Fatal("the reader never answered from its in-process tier")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	servedFromMemory()

	err := writer.Write(ctx, [][]byte{k.Hash}, func(ctx context.Context) ([]keys.Change, error) {
		rs.Stop()
		rs.Start()
		// The reader notices (its stream breaks and it forgets every copy),
		// resubscribes and trusts its tier again.
		waitFor(t, "the reader's stream to break", func() bool { return reader.bus.confirmed.Load() < 0 })
		waitFor(t, "the reader's lease to be fresh again", func() bool { return reader.bus.fresh(reader.now()) })
		if got := servedFromMemory(); got.State != keys.StateActive {
			t.Fatalf("before the commit the reader has %v, want the key still active", got.State)
		}
		_, after, err := st.Update(ctx, k.ID, func(k *keys.Key) error { k.State = keys.StateDisabled; return nil },
			store.Audit{Action: audit.ActionDisable})
		if err != nil {
			return nil, err
		}
		return []keys.Change{{Hash: after.Hash, Key: after, Version: after.Version}}, nil
	})
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	got, err := reader.ByHash(ctx, sec.Sum())
	if err != nil {
		t.Fatal(err)
	}
	if got.State != keys.StateDisabled {
		t.Fatalf("after Write returned, the reader still has the key %v (version %d): a copy cached while Redis had lost the write's marker",
			got.State, got.Version)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 5s for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestWriteCancelledDuringCommitIsNotUndone: the caller gives up (its
// context ends) while COMMIT is on its way, and the store applies it. The
// write's outcome is unknown to the writer, so it must not end its claims
// as if nothing had been written: that would let the old snapshot in Redis
// be served again, for the whole TTL, although the row has changed.
func TestWriteCancelledDuringCommitIsNotUndone(t *testing.T) {
	st := newStore(t)
	rs := testenv.StartRedis(t)
	ns := namespace(t)
	writer := running(t, New(Options{Store: st.lookup, Local: true, Redis: redisClient(t, rs.Addr), Namespace: ns, Logger: quiet}))
	reader := running(t, New(Options{Store: st.lookup, Local: true, Redis: redisClient(t, rs.Addr), Namespace: ns, Logger: quiet}))
	k, sec := st.addKey(t)
	for range 2 { // in Redis and in the reader's memory
		if _, err := reader.ByHash(context.Background(), sec.Sum()); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err := writer.Write(ctx, [][]byte{k.Hash}, func(ctx context.Context) ([]keys.Change, error) {
		if _, _, err := st.Update(context.Background(), k.ID, func(k *keys.Key) error { k.State = keys.StateDisabled; return nil },
			store.Audit{Action: audit.ActionDisable}); err != nil {
			t.Fatal(err)
		}
		cancel() // the COMMIT went through; its answer did not arrive in time
		return nil, ctx.Err()
	})
	if err == nil {
		t.Fatal("Write succeeded with a failed commit")
	}
	for _, c := range []*Cache{reader, writer} {
		got, err := c.ByHash(context.Background(), sec.Sum())
		if err != nil {
			t.Fatal(err)
		}
		if got.State != keys.StateDisabled {
			t.Fatalf("after a write whose COMMIT was applied as its caller gave up: the key is served %v (version %d), the store has it disabled",
				got.State, got.Version)
		}
	}
}

// TestSharedLookupSurvivesTheLeadersCancellation: concurrent misses of one
// key share one store read, made with the context of the lookup that
// started it. If that caller gives up, the others, still waiting, must get
// an answer, not its cancellation.
func TestSharedLookupSurvivesTheLeadersCancellation(t *testing.T) {
	st := newStore(t)
	_, sec := st.addKey(t)
	entered, gate := make(chan struct{}, 8), make(chan struct{})
	lookup := func(ctx context.Context, h []byte) (*keys.Key, error) {
		entered <- struct{}{}
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return st.GetByHash(ctx, h)
	}
	c := New(Options{Store: lookup, Local: true, Logger: quiet})
	leaderCtx, cancel := context.WithCancel(context.Background())
	leader := make(chan error, 1)
	go func() { _, err := c.ByHash(leaderCtx, sec.Sum()); leader <- err }()
	<-entered
	follower := make(chan error, 1)
	go func() { _, err := c.ByHash(context.Background(), sec.Sum()); follower <- err }()
	time.Sleep(50 * time.Millisecond) // the follower joins the leader's flight
	cancel()
	if err := <-leader; !errors.Is(err, context.Canceled) {
		t.Fatalf("the leader: %v, want its own cancellation", err)
	}
	select {
	case <-entered: // the follower looks up again, alone
	case err := <-follower:
		t.Fatalf("a lookup that joined a cancelled one failed with %v; want the key", err)
	case <-time.After(5 * time.Second):
		t.Fatal("the follower neither looked up again nor returned")
	}
	close(gate)
	if err := <-follower; err != nil {
		t.Fatalf("a lookup that joined a cancelled one failed with %v; want the key", err)
	}
}
