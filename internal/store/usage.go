package store

import (
	"cmp"
	"slices"
	"time"
)

// UsageBatch is RecordUsage's input as both backends write it: counts
// summed per key, hour (truncated to the hour, UTC) and reason, counts below
// 1 dropped, last-used times in microseconds, both sorted by key (then hour
// and reason), so that concurrent batches lock rows in one order.
type UsageBatch struct {
	Counts   []UsageCount
	LastUsed []LastUsed
}

// LastUsed is one key's last-used time in a UsageBatch.
type LastUsed struct {
	KeyID string
	Time  time.Time
}

// NewUsageBatch builds the batch for counts and lastUsed.
func NewUsageBatch(counts []UsageCount, lastUsed map[string]time.Time) UsageBatch {
	type slot struct {
		key    string
		hour   time.Time
		reason string
	}
	sum := map[slot]int64{}
	for _, c := range counts {
		if c.Count < 1 {
			continue
		}
		sum[slot{c.KeyID, Micro(c.Hour).Truncate(time.Hour), c.Reason}] += c.Count
	}
	var b UsageBatch
	for s, n := range sum {
		b.Counts = append(b.Counts, UsageCount{KeyID: s.key, Hour: s.hour, Reason: s.reason, Count: n})
	}
	slices.SortFunc(b.Counts, func(x, y UsageCount) int {
		return cmp.Or(cmp.Compare(x.KeyID, y.KeyID), x.Hour.Compare(y.Hour), cmp.Compare(x.Reason, y.Reason))
	})
	for id, t := range lastUsed {
		if t = Micro(t); !t.IsZero() {
			b.LastUsed = append(b.LastUsed, LastUsed{KeyID: id, Time: t})
		}
	}
	slices.SortFunc(b.LastUsed, func(x, y LastUsed) int { return cmp.Compare(x.KeyID, y.KeyID) })
	return b
}

// KeyIDs are the distinct keys the batch names, sorted.
func (b UsageBatch) KeyIDs() []string {
	var ids []string
	for _, c := range b.Counts {
		ids = append(ids, c.KeyID)
	}
	for _, l := range b.LastUsed {
		ids = append(ids, l.KeyID)
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// Keep returns the batch without the keys for which exists is false.
func (b UsageBatch) Keep(exists func(id string) bool) UsageBatch {
	var out UsageBatch
	for _, c := range b.Counts {
		if exists(c.KeyID) {
			out.Counts = append(out.Counts, c)
		}
	}
	for _, l := range b.LastUsed {
		if exists(l.KeyID) {
			out.LastUsed = append(out.LastUsed, l)
		}
	}
	return out
}
