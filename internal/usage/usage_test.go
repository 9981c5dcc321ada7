package usage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/validate"
)

// fakeStore records every RecordUsage call; fail makes the next calls fail.
type fakeStore struct {
	mu    sync.Mutex
	calls [][]store.UsageCount
	last  []map[string]time.Time
	fail  int // how many of the next calls fail
}

func (f *fakeStore) RecordUsage(_ context.Context, counts []store.UsageCount, lastUsed map[string]time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail > 0 {
		f.fail--
		return errors.New("store down")
	}
	f.calls = append(f.calls, counts)
	f.last = append(f.last, lastUsed)
	return nil
}

func (f *fakeStore) failNext(n int) { f.mu.Lock(); f.fail = n; f.mu.Unlock() }

func (f *fakeStore) numCalls() int { f.mu.Lock(); defer f.mu.Unlock(); return len(f.calls) }

// totals sums every written count by "key/reason".
func (f *fakeStore) totals() map[string]int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]int64{}
	for _, c := range f.calls {
		for _, u := range c {
			out[u.KeyID+"/"+u.Reason] += u.Count
		}
	}
	return out
}

// clock is an injectable time.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time)     { c.mu.Lock(); c.t = t; c.mu.Unlock() }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }
func at(h, m, s int) time.Time       { return time.Date(2030, 5, 6, h, m, s, 7000, time.UTC) }
func hour(h int) time.Time           { return time.Date(2030, 5, 6, h, 0, 0, 0, time.UTC) }
func quiet() *slog.Logger            { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
func row(id string, h int, reason string, n int64) store.UsageCount {
	return store.UsageCount{KeyID: id, Hour: hour(h), Reason: reason, Count: n}
}

func newRecorder(t *testing.T, o Options) (*Recorder, *fakeStore, *clock) {
	t.Helper()
	fs, c := &fakeStore{}, &clock{t: at(10, 15, 0)}
	o.Store, o.Now, o.Logger = fs, c.Now, quiet()
	return New(o), fs, c
}

func flush(t *testing.T, r *Recorder) {
	t.Helper()
	if err := r.Flush(context.Background()); err != nil {
		t.Fatalf("Flush: %v", err)
	}
}

func TestReasonNamesAreTheProtoNames(t *testing.T) {
	for r := validate.Reason(0); int(r) < numReasons; r++ {
		if want := keywardv1.ValidateResponse_Reason(r).String(); ReasonName(r) != want {
			t.Errorf("ReasonName(%d) = %q, want %q", r, ReasonName(r), want)
		}
	}
	// The table covers every reason validate names.
	if next := validate.Reason(numReasons).String(); !strings.HasPrefix(next, "reason_") {
		t.Errorf("validate.Reason(%d) is %q: add it to reasonNames", numReasons, next)
	}
	if got := ReasonName(99); got != "REASON_UNSPECIFIED" {
		t.Errorf("ReasonName(99) = %q", got)
	}
}

func TestCountsByKeyHourAndReason(t *testing.T) {
	r, fs, c := newRecorder(t, Options{})
	for range 3 {
		r.Used("key_b", validate.ReasonValid)
	}
	c.Add(time.Minute)
	r.Used("key_b", validate.ReasonValid)
	lastValid := c.Now()
	c.Add(time.Minute)
	r.Used("key_b", validate.ReasonDisabled) // refusals count, but are not a use
	r.Used("key_b", validate.ReasonDisabled)
	r.Used("key_a", validate.ReasonExpired)
	r.Used("key_a", validate.Reason(42)) // unknown to the table
	flush(t, r)

	if fs.numCalls() != 1 {
		t.Fatalf("%d RecordUsage calls, want 1", fs.numCalls())
	}
	want := []store.UsageCount{
		row("key_a", 10, "REASON_UNSPECIFIED", 1),
		row("key_a", 10, "REASON_EXPIRED", 1),
		row("key_b", 10, "REASON_VALID", 4),
		row("key_b", 10, "REASON_DISABLED", 2),
	}
	if !reflect.DeepEqual(fs.calls[0], want) {
		t.Errorf("counts\n got %v\nwant %v", fs.calls[0], want)
	}
	if want := map[string]time.Time{"key_b": lastValid}; !reflect.DeepEqual(fs.last[0], want) {
		t.Errorf("last used %v, want %v (only valid uses count)", fs.last[0], want)
	}
}

func TestHourBuckets(t *testing.T) {
	r, fs, c := newRecorder(t, Options{})
	c.Set(time.Date(2030, 5, 6, 10, 59, 59, 999_999_999, time.UTC))
	r.Used("key_a", validate.ReasonValid)
	c.Set(at(11, 0, 0))
	r.Used("key_a", validate.ReasonValid)
	r.Used("key_a", validate.ReasonValid)
	c.Set(at(10, 30, 0)) // a clock set back counts into its own hour
	r.Used("key_a", validate.ReasonValid)
	flush(t, r)
	want := []store.UsageCount{row("key_a", 10, "REASON_VALID", 2), row("key_a", 11, "REASON_VALID", 2)}
	if !reflect.DeepEqual(fs.calls[0], want) {
		t.Errorf("counts\n got %v\nwant %v", fs.calls[0], want)
	}
	if got := fs.last[0]["key_a"]; !got.Equal(at(11, 0, 0)) {
		t.Errorf("last used %v, want the latest valid use %v", got, at(11, 0, 0))
	}
}

func TestOneWritePerFlush(t *testing.T) {
	r, fs, _ := newRecorder(t, Options{})
	flush(t, r)
	if fs.numCalls() != 0 {
		t.Fatalf("an empty flush wrote")
	}
	for i := range 1000 {
		r.Used(fmt.Sprintf("key_%03d", i%100), validate.ReasonValid)
	}
	flush(t, r)
	flush(t, r)
	if fs.numCalls() != 1 {
		t.Fatalf("%d RecordUsage calls, want 1", fs.numCalls())
	}
	if len(fs.calls[0]) != 100 || len(fs.last[0]) != 100 {
		t.Fatalf("wrote %d counts and %d last-used times, want 100 each", len(fs.calls[0]), len(fs.last[0]))
	}
	for i, u := range fs.calls[0] {
		if u.Count != 10 || u.KeyID != fmt.Sprintf("key_%03d", i) {
			t.Fatalf("row %d: %v, want key_%03d counted 10 times, in key order", i, u, i)
		}
	}
}

func TestFailedFlushIsMergedBack(t *testing.T) {
	r, fs, c := newRecorder(t, Options{})
	r.Used("key_a", validate.ReasonValid)
	r.Used("key_b", validate.ReasonDisabled)
	fs.failNext(1)
	if err := r.Flush(context.Background()); err == nil || !strings.Contains(err.Error(), "store down") {
		t.Fatalf("Flush = %v, want the store's error", err)
	}
	c.Set(at(11, 5, 0))
	r.Used("key_a", validate.ReasonValid)
	r.Used("key_a", validate.ReasonDisabled)
	second := c.Now()
	flush(t, r)
	want := []store.UsageCount{
		row("key_a", 10, "REASON_VALID", 1),
		row("key_a", 11, "REASON_VALID", 1),
		row("key_a", 11, "REASON_DISABLED", 1),
		row("key_b", 10, "REASON_DISABLED", 1),
	}
	if fs.numCalls() != 1 || !reflect.DeepEqual(fs.calls[0], want) {
		t.Fatalf("writes %v, want one: %v", fs.calls, want)
	}
	if got := fs.last[0]; len(got) != 1 || !got["key_a"].Equal(second) {
		t.Errorf("last used %v, want key_a at %v", got, second)
	}
	// A key whose only pending entry was merged back keeps its last use.
	r.Used("key_c", validate.ReasonValid)
	fs.failNext(1)
	_ = r.Flush(context.Background())
	flush(t, r)
	if got := fs.last[1]["key_c"]; !got.Equal(second) {
		t.Errorf("merged-back last use %v, want %v", got, second)
	}
	if r.Dropped() != 0 {
		t.Errorf("Dropped = %d, want 0", r.Dropped())
	}
}

func TestBoundedKeys(t *testing.T) {
	r, fs, _ := newRecorder(t, Options{MaxKeys: 3})
	for _, id := range []string{"key_1", "key_2", "key_3", "key_4", "key_5", "key_1"} {
		r.Used(id, validate.ReasonValid)
	}
	if r.Dropped() != 2 {
		t.Fatalf("Dropped = %d, want 2 (key_4, key_5)", r.Dropped())
	}
	fs.failNext(1)
	_ = r.Flush(context.Background())
	// The failed batch went back: still no room for new keys…
	r.Used("key_6", validate.ReasonValid)
	if r.Dropped() != 3 {
		t.Fatalf("Dropped = %d, want 3", r.Dropped())
	}
	flush(t, r)
	want := map[string]int64{"key_1/REASON_VALID": 2, "key_2/REASON_VALID": 1, "key_3/REASON_VALID": 1}
	if got := fs.totals(); !reflect.DeepEqual(got, want) {
		t.Fatalf("wrote %v, want %v", got, want)
	}
	// …and after a successful flush there is room again.
	r.Used("key_6", validate.ReasonValid)
	flush(t, r)
	if got := fs.totals()["key_6/REASON_VALID"]; got != 1 || r.Dropped() != 3 {
		t.Fatalf("key_6 counted %d, Dropped %d; want 1 and 3", got, r.Dropped())
	}

	// A merge-back finding the table full of new keys drops the old batch.
	for _, id := range []string{"key_a", "key_b"} {
		r.Used(id, validate.ReasonValid)
	}
	fs.failNext(1)
	_ = r.Flush(context.Background())
	// Take the batch back out, fill the table with new keys, merge it back.
	batch := r.take()
	for _, id := range []string{"key_x", "key_y", "key_z"} {
		r.Used(id, validate.ReasonValid)
	}
	r.putBack(batch)
	if r.Dropped() != 5 {
		t.Fatalf("Dropped = %d, want 5 (key_a and key_b lost)", r.Dropped())
	}
	if n := r.keys.Load(); n != 3 {
		t.Fatalf("%d keys pending, want 3", n)
	}
}

func TestBoundedHoursWhileTheStoreFails(t *testing.T) {
	r, fs, c := newRecorder(t, Options{})
	for h := range maxHours + 2 {
		c.Set(at(h, 1, 0))
		r.Used("key_a", validate.ReasonValid)
		r.Used("key_a", validate.ReasonValid)
		fs.failNext(1)
		if err := r.Flush(context.Background()); err == nil {
			t.Fatal("Flush succeeded against a failing store")
		}
	}
	flush(t, r)
	got := fs.calls[0]
	if len(got) != maxHours || !got[0].Hour.Equal(hour(2)) || !got[maxHours-1].Hour.Equal(hour(maxHours+1)) {
		t.Fatalf("wrote %v, want the latest %d hours", got, maxHours)
	}
	if r.Dropped() != 4 {
		t.Fatalf("Dropped = %d, want 4 (two hours of two)", r.Dropped())
	}
}

func TestConcurrentUseAndFlush(t *testing.T) {
	fs := &fakeStore{}
	r := New(Options{Store: fs, Logger: quiet()})
	const workers, per = 8, 5000
	var wg sync.WaitGroup
	var stop atomic.Bool
	flusherDone := make(chan struct{})
	go func() {
		defer close(flusherDone)
		for i := 0; !stop.Load(); i++ {
			if i%3 == 0 {
				fs.failNext(1)
			}
			_ = r.Flush(context.Background())
		}
	}()
	for w := range workers {
		wg.Go(func() {
			for i := range per {
				reason := validate.ReasonValid
				if i%5 == 0 {
					reason = validate.ReasonDisabled
				}
				r.Used(fmt.Sprintf("key_%d", (w*per+i)%37), reason)
			}
		})
	}
	wg.Wait()
	stop.Store(true)
	<-flusherDone
	fs.failNext(0)
	flush(t, r)
	var valid, disabled int64
	for k, n := range fs.totals() {
		switch {
		case strings.HasSuffix(k, "/REASON_VALID"):
			valid += n
		case strings.HasSuffix(k, "/REASON_DISABLED"):
			disabled += n
		default:
			t.Errorf("unexpected count %s", k)
		}
	}
	if valid != workers*per*4/5 || disabled != workers*per/5 || r.Dropped() != 0 {
		t.Fatalf("wrote %d valid and %d disabled, dropped %d; want %d, %d and 0", valid, disabled, r.Dropped(), workers*per*4/5, workers*per/5)
	}
}

func TestRunFlushesEveryIntervalAndOnStop(t *testing.T) {
	r, fs, _ := newRecorder(t, Options{Interval: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	r.Used("key_a", validate.ReasonValid)
	deadline := time.Now().Add(5 * time.Second)
	for fs.numCalls() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("Run did not flush within 5s")
		}
		time.Sleep(time.Millisecond)
	}
	r.Used("key_a", validate.ReasonDisabled)
	cancel()
	<-done
	want := map[string]int64{"key_a/REASON_VALID": 1, "key_a/REASON_DISABLED": 1}
	if got := fs.totals(); !reflect.DeepEqual(got, want) {
		t.Fatalf("wrote %v, want %v (the last flush on stop included)", got, want)
	}
}

func BenchmarkUsed(b *testing.B) {
	r := New(Options{Store: &fakeStore{}, Logger: quiet()})
	ids := make([]string, 1024)
	for i := range ids {
		ids[i] = fmt.Sprintf("key_%04d", i)
	}
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			r.Used(ids[i%len(ids)], validate.ReasonValid)
			i++
		}
	})
}
