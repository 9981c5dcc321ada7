package abuse

import (
	"container/heap"
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Floor holds refusals until a fixed time after their request arrived
// (validate.Pacer). A nil *Floor holds nothing. It is safe for concurrent
// use.
//
// Sleeping until the deadline would not do: when the process is otherwise
// idle, Go wakes sleepers at the next millisecond after it last went idle
// (its poller waits in whole milliseconds), so a refusal that reached the
// store 0.3 ms later would wake 0.3 ms later too. Instead one goroutine,
// running only while refusals are held, wakes on a fixed grid of the
// system's monotonic clock (tick) — absolute times that no request can
// shift — and releases every refusal whose deadline has passed. A held
// refusal is therefore answered at its deadline plus a delay uniform in
// [0, tick), the same for every path behind it.
type Floor struct {
	d time.Duration

	mu      sync.Mutex
	pending waiters
	running bool // the release goroutine runs

	held atomic.Uint64
	late atomic.Uint64
}

// tick is the release grid's spacing.
const tick = 250 * time.Microsecond

// NewFloor returns a Floor of d; nil (holding nothing) if d <= 0.
func NewFloor(d time.Duration) *Floor {
	if d <= 0 {
		return nil
	}
	return &Floor{d: d}
}

// Hold returns at the first tick after start plus the floor, or when ctx
// ends. start must carry a monotonic clock reading (time.Now's does). A
// refusal already later than that returns at once and is counted as late:
// its timing may show (Late).
func (f *Floor) Hold(ctx context.Context, start time.Time) {
	if f == nil {
		return
	}
	deadline := start.Add(f.d)
	if !time.Now().Before(deadline) {
		f.late.Add(1)
		return
	}
	f.held.Add(1)
	w := &waiter{deadline: deadline, done: make(chan struct{})}
	f.mu.Lock()
	heap.Push(&f.pending, w)
	if !f.running {
		f.running = true
		go f.release()
	}
	f.mu.Unlock()
	select {
	case <-w.done:
	case <-ctx.Done(): // the caller has gone; it is released with the rest
	}
}

// release wakes on every tick while refusals are held.
func (f *Floor) release() {
	for {
		sleepToNextTick()
		now := time.Now()
		f.mu.Lock()
		for len(f.pending) > 0 && !now.Before(f.pending[0].deadline) {
			close(heap.Pop(&f.pending).(*waiter).done)
		}
		if len(f.pending) == 0 {
			f.running = false
			f.mu.Unlock()
			return
		}
		f.mu.Unlock()
	}
}

// Held is how many refusals were held; Late how many came after the floor
// had passed already, so that their timing may show (raise the floor above
// the store's slowest lookups if this grows).
func (f *Floor) Held() uint64 { return f.held.Load() }
func (f *Floor) Late() uint64 { return f.late.Load() }

// Duration is the floor.
func (f *Floor) Duration() time.Duration { return f.d }

type waiter struct {
	deadline time.Time
	done     chan struct{}
}

// waiters is a min-heap by deadline.
type waiters []*waiter

func (w waiters) Len() int           { return len(w) }
func (w waiters) Less(i, j int) bool { return w[i].deadline.Before(w[j].deadline) }
func (w waiters) Swap(i, j int)      { w[i], w[j] = w[j], w[i] }
func (w *waiters) Push(x any)        { *w = append(*w, x.(*waiter)) }
func (w *waiters) Pop() any {
	old := *w
	x := old[len(old)-1]
	old[len(old)-1] = nil
	*w = old[:len(old)-1]
	return x
}
