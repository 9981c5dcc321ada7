package cache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// bus carries invalidations between instances over one sharded Redis
// pub/sub channel and keeps this instance's lease.
type bus struct {
	c        redis.UniversalClient
	names    names
	id       string
	local    *local
	clock    func() int64
	lease    time.Duration
	interval time.Duration
	log      *slog.Logger
	obs      Observer

	// confirmed is the send time of the latest ping whose pong came back on
	// the current subscription; -1 while there is none.
	confirmed atomic.Int64
	seq       atomic.Uint64
	mu        sync.Mutex
	waiting   map[string]*waiter
}

type waiter struct {
	need, got int64 // need is -1 until SPUBLISH has said how many received it
	done      chan struct{}
}

func newBus(c redis.UniversalClient, n names, l *local, clock func() int64, lease, interval time.Duration, log *slog.Logger) *bus {
	var id [8]byte
	rand.Read(id[:])
	b := &bus{c: c, names: n, id: hex.EncodeToString(id[:]), local: l, clock: clock, lease: lease, interval: interval, log: log, waiting: map[string]*waiter{}}
	b.confirmed.Store(-1)
	return b
}

// fresh reports whether in-process copies may be trusted at now.
func (b *bus) fresh(now int64) bool {
	c := b.confirmed.Load()
	return c >= 0 && now-c < int64(b.lease)
}

// run subscribes and processes the stream until ctx ends. Messages are
// applied one at a time, in order: that order is what makes a pong proof
// that everything published before its ping has been applied.
func (b *bus) run(ctx context.Context) {
	ps := b.c.SSubscribe(ctx, b.names.inval, b.names.ackPrefix+b.id)
	// Receive does not return when ctx ends; closing the subscription does.
	stop := context.AfterFunc(ctx, func() { ps.Close() })
	defer stop()
	go b.ping(ctx, ps)
	for ctx.Err() == nil {
		msg, err := ps.Receive(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			// The connection broke: messages may be lost. Stop trusting
			// in-process copies until a new subscription confirms a ping.
			if b.confirmed.Swap(-1) >= 0 {
				b.log.WarnContext(ctx, "invalidation stream lost; in-process cache suspended", "err", err)
			}
			b.local.clear()
			time.Sleep(b.interval)
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			// A (re)subscription: anything published while we were away is
			// lost, so forget every copy made before it.
			b.confirmed.Store(-1)
			b.local.clear()
		case *redis.Pong:
			if s, err := strconv.ParseInt(m.Payload, 10, 64); err == nil && s > b.confirmed.Load() {
				if b.confirmed.Swap(s) < 0 {
					b.log.InfoContext(ctx, "invalidation stream confirmed; in-process cache active")
				}
			}
		case *redis.Message:
			if m.Channel == b.names.inval {
				b.apply(ctx, m.Payload)
			} else {
				b.acked(m.Payload)
			}
		}
	}
}

func (b *bus) ping(ctx context.Context, ps *redis.PubSub) {
	t := time.NewTicker(b.interval)
	defer t.Stop()
	for {
		// Ping sends on the subscription connection itself, so the pong comes
		// back behind every message Redis queued for us before the ping.
		_ = ps.Ping(ctx, strconv.FormatInt(b.clock(), 10))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Invalidation messages: "<writer id>|<message id>|<hex hash>,<hex hash>…".
func (b *bus) apply(ctx context.Context, payload string) {
	parts := strings.SplitN(payload, "|", 3)
	if len(parts) != 3 {
		b.log.WarnContext(ctx, "ignoring malformed invalidation")
		return
	}
	for _, hx := range strings.Split(parts[2], ",") {
		var h [32]byte
		if n, err := hex.Decode(h[:], []byte(hx)); err != nil || n != 32 {
			// Unreadable: drop everything rather than risk a stale copy.
			b.local.clear()
			continue
		}
		b.local.invalidate(&h)
	}
	go func() {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.lease)
		defer cancel()
		_ = b.c.SPublish(actx, b.names.ackPrefix+parts[0], parts[1]).Err()
	}()
}

func (b *bus) acked(msgID string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if w, ok := b.waiting[msgID]; ok {
		w.got++
		if w.need >= 0 && w.got >= w.need {
			close(w.done)
			delete(b.waiting, msgID)
		}
	}
}

// invalidate makes every instance drop hashes: it publishes, then waits for
// an acknowledgement from each instance that received the message, or until
// any silent one's lease has surely lapsed. SPUBLISH reports how many
// subscriptions received the message, so no membership list is needed; an
// instance without a subscription at that moment trusts nothing it cached
// before its next (re)subscription.
func (b *bus) invalidate(ctx context.Context, hashes [][32]byte) error {
	id := strconv.FormatUint(b.seq.Add(1), 36)
	var sb strings.Builder
	sb.WriteString(b.id + "|" + id + "|")
	for i, h := range hashes {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(hex.EncodeToString(h[:]))
	}
	w := &waiter{need: -1, done: make(chan struct{})}
	b.mu.Lock()
	b.waiting[id] = w
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.waiting, id)
		b.mu.Unlock()
	}()

	start := time.Now()
	n, err := b.c.SPublish(ctx, b.names.inval, sb.String()).Result()
	if err != nil {
		return fmt.Errorf("publish invalidation: %w", err)
	}
	// From here on, an instance that has not applied the message stops
	// trusting its copies within one lease of its last confirmed ping, which
	// was sent before now. Waiting a lease (plus a margin for clock rate
	// differences) is therefore enough even without its acknowledgement.
	deadline := time.NewTimer(b.lease + b.lease/10 + 5*time.Millisecond)
	defer deadline.Stop()
	b.mu.Lock()
	w.need = n
	if w.got >= n {
		b.mu.Unlock()
		b.obs.Invalidation(time.Since(start), true)
		return nil
	}
	b.mu.Unlock()
	select {
	case <-w.done:
		b.obs.Invalidation(time.Since(start), true)
		return nil
	case <-deadline.C:
		b.obs.Invalidation(time.Since(start), false)
		b.log.WarnContext(ctx, "an instance did not acknowledge an invalidation; waited out its lease", "receivers", n)
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for invalidation acknowledgements: %w", ctx.Err())
	}
}
