package usage

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/validate"
)

// Writer is where counts go; store.Store implements it.
type Writer interface {
	RecordUsage(ctx context.Context, counts []store.UsageCount, lastUsed map[string]time.Time) error
}

// Options configures a Recorder.
type Options struct {
	Store Writer
	// Interval between flushes (0: DefaultInterval).
	Interval time.Duration
	// MaxKeys bounds the distinct keys counted between two successful
	// flushes (0: DefaultMaxKeys). Verifications of further keys are
	// dropped, counted by Dropped and logged at the next flush.
	MaxKeys int
	// Now is the clock (nil: time.Now).
	Now    func() time.Time
	Logger *slog.Logger
}

const (
	DefaultInterval = 10 * time.Second
	DefaultMaxKeys  = 100_000
	// maxHours bounds the hours kept per key while flushes fail: beyond it
	// the oldest hour is dropped. With the defaults a store outage can
	// hold at most about 100k keys × 6 hours × ~100 bytes in memory.
	maxHours = 6
	// flushTimeout bounds one flush; finalFlushTimeout the one at shutdown.
	flushTimeout      = 30 * time.Second
	finalFlushTimeout = 5 * time.Second
	numShards         = 64
)

// reasonNames are keyward.v1's ValidateResponse.Reason names, indexed by
// validate.Reason; a reason beyond the table is counted as the first entry.
var reasonNames = [...]string{
	0:                                "REASON_UNSPECIFIED",
	validate.ReasonValid:             "REASON_VALID",
	validate.ReasonNotFound:          "REASON_NOT_FOUND",
	validate.ReasonMalformed:         "REASON_MALFORMED",
	validate.ReasonDisabled:          "REASON_DISABLED",
	validate.ReasonExpired:           "REASON_EXPIRED",
	validate.ReasonInsufficientScope: "REASON_INSUFFICIENT_SCOPE",
	validate.ReasonWrongEnvironment:  "REASON_WRONG_ENVIRONMENT",
	validate.ReasonIPNotAllowed:      "REASON_IP_NOT_ALLOWED",
	validate.ReasonRateLimited:       "REASON_RATE_LIMITED",
	validate.ReasonUsageExceeded:     "REASON_USAGE_EXCEEDED",
}

const numReasons = len(reasonNames)

// ReasonName is r's keyward.v1 name, as stored in store.UsageCount.Reason.
func ReasonName(r validate.Reason) string { return reasonNames[reasonIndex(r)] }

func reasonIndex(r validate.Reason) int {
	if r < 0 || int(r) >= numReasons {
		return 0
	}
	return int(r)
}

// Recorder counts verifications in memory and writes them in batches. It
// implements validate.UsageRecorder.
type Recorder struct {
	w        Writer
	interval time.Duration
	maxKeys  int64
	now      func() time.Time
	log      *slog.Logger

	seed    maphash.Seed
	shards  [numShards]shard
	keys    atomic.Int64  // entries in the shards
	dropped atomic.Uint64 // verifications not counted
	flushMu sync.Mutex    // one flush at a time
	logged  uint64        // dropped when last logged; under flushMu
}

var _ validate.UsageRecorder = (*Recorder)(nil)

type shard struct {
	mu   sync.Mutex
	keys map[string]*entry
	_    [48]byte // 64 bytes a shard: neighbouring locks never share a cache line
}

// entry is one key's pending usage.
type entry struct {
	hours    []hourCounts // ascending by hour; usually one
	lastUsed time.Time    // latest valid use; zero: none pending
}

type hourCounts struct {
	hour int64 // Unix seconds at the start of the hour
	n    [numReasons]int64
}

// New returns a Recorder writing to o.Store.
func New(o Options) *Recorder {
	r := &Recorder{w: o.Store, interval: o.Interval, maxKeys: int64(o.MaxKeys), now: o.Now, log: o.Logger, seed: maphash.MakeSeed()}
	if r.interval <= 0 {
		r.interval = DefaultInterval
	}
	if r.maxKeys <= 0 {
		r.maxKeys = DefaultMaxKeys
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	for i := range r.shards {
		r.shards[i].keys = map[string]*entry{}
	}
	return r
}

// Used counts one verification of key keyID with outcome reason; a valid one
// also moves the key's last-used time. It never blocks on I/O.
func (r *Recorder) Used(keyID string, reason validate.Reason) {
	now := r.now()
	sec := now.Unix()
	hour, idx := sec-sec%3600, reasonIndex(reason)
	sh := &r.shards[maphash.String(r.seed, keyID)%numShards]
	sh.mu.Lock()
	e := sh.keys[keyID]
	if e == nil {
		if r.keys.Add(1) > r.maxKeys {
			r.keys.Add(-1)
			sh.mu.Unlock()
			r.dropped.Add(1)
			return
		}
		e = &entry{hours: make([]hourCounts, 0, 1)}
		sh.keys[keyID] = e
	}
	e.add(hour, idx, 1)
	if reason == validate.ReasonValid && now.After(e.lastUsed) {
		e.lastUsed = now
	}
	lost := e.trim()
	sh.mu.Unlock()
	if lost > 0 {
		r.dropped.Add(uint64(lost))
	}
}

// add counts n at (hour, reason idx).
func (e *entry) add(hour int64, idx int, n int64) {
	i := len(e.hours)
	for i > 0 && e.hours[i-1].hour > hour {
		i-- // an older hour: only after a failed flush, or a clock set back
	}
	if i > 0 && e.hours[i-1].hour == hour {
		e.hours[i-1].n[idx] += n
		return
	}
	e.hours = slices.Insert(e.hours, i, hourCounts{hour: hour})
	e.hours[i].n[idx] = n
}

// trim drops the oldest hours beyond maxHours and returns how many
// verifications they held.
func (e *entry) trim() int64 {
	var lost int64
	for len(e.hours) > maxHours {
		for _, n := range e.hours[0].n {
			lost += n
		}
		e.hours = e.hours[1:]
	}
	return lost
}

func (e *entry) total() int64 {
	var sum int64
	for _, h := range e.hours {
		for _, n := range h.n {
			sum += n
		}
	}
	return sum
}

// Dropped is how many verifications were not counted since the start,
// because too many keys were pending (MaxKeys) or too many hours (a long
// store outage).
func (r *Recorder) Dropped() uint64 { return r.dropped.Load() }

// Flush writes everything counted so far in one RecordUsage call. If the
// write fails, the counts are merged back (within the memory bounds) for
// the next flush to retry, and the error is returned.
func (r *Recorder) Flush(ctx context.Context) error {
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
	if d := r.dropped.Load(); d != r.logged {
		r.log.WarnContext(ctx, "usage: verifications not counted: too many keys pending between flushes, or counts kept too long while the store failed",
			"dropped", d-r.logged, "max_keys", r.maxKeys)
		r.logged = d
	}
	batch := r.take()
	if len(batch) == 0 {
		return nil
	}
	counts, lastUsed := rows(batch)
	if err := r.w.RecordUsage(ctx, counts, lastUsed); err != nil {
		r.putBack(batch)
		return fmt.Errorf("record usage of %d keys: %w", len(batch), err)
	}
	return nil
}

// take empties every shard and returns what they held.
func (r *Recorder) take() map[string]*entry {
	var out map[string]*entry
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		m := sh.keys
		if len(m) == 0 {
			sh.mu.Unlock()
			continue
		}
		sh.keys = map[string]*entry{}
		r.keys.Add(-int64(len(m)))
		sh.mu.Unlock()
		if out == nil {
			out = m // no longer the shard's: this flush owns it
			continue
		}
		for id, e := range m {
			out[id] = e
		}
	}
	return out
}

// putBack merges a batch that could not be written into the pending counts.
func (r *Recorder) putBack(batch map[string]*entry) {
	var lost int64
	for id, old := range batch {
		sh := &r.shards[maphash.String(r.seed, id)%numShards]
		sh.mu.Lock()
		switch cur := sh.keys[id]; {
		case cur != nil:
			for _, h := range old.hours {
				for idx, n := range h.n {
					if n != 0 {
						cur.add(h.hour, idx, n)
					}
				}
			}
			if old.lastUsed.After(cur.lastUsed) {
				cur.lastUsed = old.lastUsed
			}
			lost += cur.trim()
		case r.keys.Add(1) > r.maxKeys:
			r.keys.Add(-1)
			lost += old.total()
		default:
			sh.keys[id] = old
		}
		sh.mu.Unlock()
	}
	if lost > 0 {
		r.dropped.Add(uint64(lost))
	}
}

// rows renders a batch for the store, sorted by key, hour and reason, so
// that concurrent flushes of several instances touch rows in one order.
func rows(batch map[string]*entry) ([]store.UsageCount, map[string]time.Time) {
	ids := make([]string, 0, len(batch))
	n := 0
	for id, e := range batch {
		ids = append(ids, id)
		n += len(e.hours)
	}
	slices.Sort(ids)
	counts := make([]store.UsageCount, 0, n)
	lastUsed := map[string]time.Time{}
	for _, id := range ids {
		e := batch[id]
		for _, h := range e.hours {
			hour := time.Unix(h.hour, 0).UTC()
			for idx, c := range h.n {
				if c != 0 {
					counts = append(counts, store.UsageCount{KeyID: id, Hour: hour, Reason: reasonNames[idx], Count: c})
				}
			}
		}
		if !e.lastUsed.IsZero() {
			lastUsed[id] = e.lastUsed
		}
	}
	return counts, lastUsed
}

// Run flushes every interval until ctx ends, then flushes once more with a
// short timeout of its own. Stop it only after the last verification
// (after the listeners have stopped), or that verification is not counted.
func (r *Recorder) Run(ctx context.Context) {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalFlushTimeout)
			defer cancel()
			if err := r.Flush(fctx); err != nil {
				r.log.Error("usage: last flush failed; the counts since the previous one are lost", "err", err)
			}
			return
		case <-t.C:
			fctx, cancel := context.WithTimeout(ctx, flushTimeout)
			err := r.Flush(fctx)
			cancel()
			if err != nil && !errors.Is(err, context.Canceled) {
				r.log.Warn("usage: flush failed; retrying with the next one", "err", err)
			}
		}
	}
}
