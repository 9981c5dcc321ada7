package abuse

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestFloorHolds(t *testing.T) {
	const d = 3 * time.Millisecond
	f := NewFloor(d)
	var took []time.Duration
	for range 20 {
		start := time.Now()
		f.Hold(context.Background(), start)
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	if took[0] < d {
		t.Errorf("a refusal was released after %v, before the floor of %v", took[0], d)
	}
	// Released at the first tick after the floor: allow for a busy machine.
	if med := took[len(took)/2]; med > d+tick+2*time.Millisecond {
		t.Errorf("median hold %v, want about %v plus up to %v", med, d, tick)
	}
	if f.Held() != 20 || f.Late() != 0 {
		t.Errorf("Held %d, Late %d; want 20, 0", f.Held(), f.Late())
	}

	// Already past the floor: at once, counted as late.
	start := time.Now()
	f.Hold(context.Background(), start.Add(-time.Second))
	if took := time.Since(start); took > time.Millisecond {
		t.Errorf("a late refusal was held %v", took)
	}
	if f.Late() != 1 {
		t.Errorf("Late = %d, want 1", f.Late())
	}

	// The caller going away ends the hold.
	long := NewFloor(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	start = time.Now()
	long.Hold(ctx, start)
	if took := time.Since(start); took > time.Second {
		t.Errorf("Hold outlived its context by %v", took)
	}

	var none *Floor
	none.Hold(context.Background(), time.Now()) // returns at once
	if NewFloor(0) != nil {
		t.Error("NewFloor(0) is not nil")
	}
}

// TestFloorHidesElapsed is why Floor has its own release clock: refusals
// that spent different times before Hold (a store read, or a cache hit)
// must come out at the same time after their start. Sleeping until the
// deadline instead leaks the difference when the process is idle (Go's
// poller waits whole milliseconds from when it went idle), which this test
// measures too, for comparison.
func TestFloorHidesElapsed(t *testing.T) {
	if testing.Short() {
		t.Skip("timing measurement")
	}
	const (
		d       = 2 * time.Millisecond
		elapsed = 400 * time.Microsecond // what a store read costs more
		n       = 150
	)
	f := NewFloor(d)
	measure := func(hold func(start time.Time)) (fast, slow time.Duration) {
		var a, b []time.Duration
		for i := range 2 * n {
			time.Sleep(time.Duration(rand.IntN(700)) * time.Microsecond) // idle, at a random phase
			start := time.Now()
			spent := time.Duration(0)
			if i%2 == 1 {
				spent = elapsed
			}
			for time.Since(start) < spent { // the slower path, on the CPU like a lookup
			}
			hold(start)
			if i%2 == 1 {
				b = append(b, time.Since(start))
			} else {
				a = append(a, time.Since(start))
			}
		}
		slices.Sort(a)
		slices.Sort(b)
		return a[n/2], b[n/2]
	}
	fast, slow := measure(func(start time.Time) { f.Hold(context.Background(), start) })
	naiveFast, naiveSlow := measure(func(start time.Time) { time.Sleep(time.Until(start.Add(d))) })
	t.Logf("median after start: Floor %v vs %v (%v apart); sleeping to the deadline %v vs %v (%v apart)",
		fast, slow, slow-fast, naiveFast, naiveSlow, naiveSlow-naiveFast)
	if diff := (slow - fast).Abs(); diff > elapsed/4 {
		t.Errorf("Floor: medians %v apart for paths %v apart, want under %v", diff, elapsed, elapsed/4)
	}
}
