package hist

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestIndexRoundTrip(t *testing.T) {
	for _, v := range []uint64{0, 1, 127, 128, 255, 256, 257, 511, 512, 1000, 123456, 1 << 40, 1<<63 - 1, 1<<64 - 1} {
		i := index(v)
		if i < 0 || i >= bucketCount {
			t.Fatalf("index(%d) = %d out of range", v, i)
		}
		low, width := lowest(i)
		if v < low || v-low >= width {
			t.Errorf("value %d in bucket %d = [%d, %d+%d)", v, i, low, low, width)
		}
	}
}

func TestQuantilesWithinOnePercent(t *testing.T) {
	var h Histogram
	r := rand.New(rand.NewPCG(1, 2))
	var all []time.Duration
	for range 100000 {
		d := time.Duration(r.ExpFloat64() * float64(200*time.Microsecond))
		h.Record(d)
		all = append(all, d)
	}
	slices.Sort(all)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := all[int(q*float64(len(all)))-1]
		got := h.Quantile(q)
		if diff := float64(got-want) / float64(want); diff > 0.01 || diff < -0.01 {
			t.Errorf("q%.3f = %v, exact %v", q, got, want)
		}
	}
	var m Histogram
	m.Merge(&h)
	m.Merge(&h)
	if m.Count() != 200000 || m.Quantile(0.5) != h.Quantile(0.5) || m.Max() != h.Max() {
		t.Errorf("merge: count %d p50 %v max %v", m.Count(), m.Quantile(0.5), m.Max())
	}
}
