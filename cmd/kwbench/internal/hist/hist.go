// Package hist is a small log-linear latency histogram in the spirit of
// HdrHistogram: 128 linear sub-buckets per power of two, so any recorded
// value is reported within 0.8% of itself, in a fixed array that costs no
// allocation per sample. One Histogram per goroutine; merge them at the end.
package hist

import (
	"math/bits"
	"time"
)

const (
	subBits  = 7
	subCount = 1 << subBits // linear sub-buckets per power of two
	// 64-bit values need at most (64-subBits) shifts; +1 for the linear head.
	bucketCount = (64 - subBits + 1) * subCount
)

// Histogram counts durations in nanoseconds.
type Histogram struct {
	counts [bucketCount]uint64
	total  uint64
	max    int64
	sum    float64
}

func index(v uint64) int {
	if v < 2*subCount {
		return int(v)
	}
	shift := bits.Len64(v) - (subBits + 1)
	mantissa := v >> uint(shift) // in [subCount, 2*subCount)
	return (shift+1)*subCount + int(mantissa-subCount)
}

// lowest and width give the range of values bucket i holds.
func lowest(i int) (low, width uint64) {
	if i < 2*subCount {
		return uint64(i), 1
	}
	shift := i/subCount - 1
	mantissa := uint64(i%subCount + subCount)
	return mantissa << uint(shift), 1 << uint(shift)
}

// Record adds one duration.
func (h *Histogram) Record(d time.Duration) {
	v := int64(d)
	if v < 0 {
		v = 0
	}
	h.counts[index(uint64(v))]++
	h.total++
	h.sum += float64(v)
	if v > h.max {
		h.max = v
	}
}

// Merge adds o's samples to h.
func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.total += o.total
	h.sum += o.sum
	if o.max > h.max {
		h.max = o.max
	}
}

// Count is the number of samples.
func (h *Histogram) Count() uint64 { return h.total }

// Max is the largest sample.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Mean is the average sample.
func (h *Histogram) Mean() time.Duration {
	if h.total == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.total))
}

// Quantile returns the value below which a fraction q of samples fall (the
// middle of the bucket holding the rank, capped at Max).
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := uint64(q*float64(h.total) + 0.5)
	if rank < 1 {
		rank = 1
	}
	if rank > h.total {
		rank = h.total
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			low, width := lowest(i)
			v := int64(low + width/2)
			if v > h.max {
				v = h.max
			}
			return time.Duration(v)
		}
	}
	return time.Duration(h.max)
}
