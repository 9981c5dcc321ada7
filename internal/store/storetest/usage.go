package storetest

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/store"
)

// hour is the hour usage tests count in.
var hour = time.Date(2031, 3, 31, 22, 0, 0, 0, time.UTC)

var usageTests = []test{
	{"usage/counts-add-up", func(t *testing.T, f *fixture) {
		k := f.create(f.newKey())
		other := f.create(f.newKey())
		f.recordUsage([]store.UsageCount{
			{KeyID: k.ID, Hour: hour.Add(10 * time.Minute), Reason: "REASON_VALID", Count: 2}, // truncated to the hour
			{KeyID: k.ID, Hour: hour, Reason: "REASON_VALID", Count: 1},                       // and summed
			{KeyID: k.ID, Hour: hour, Reason: "REASON_RATE_LIMITED", Count: 1},
			{KeyID: k.ID, Hour: hour.Add(time.Hour), Reason: "REASON_VALID", Count: 5},
			{KeyID: other.ID, Hour: hour, Reason: "REASON_VALID", Count: 7},
		}, nil)
		f.recordUsage([]store.UsageCount{
			{KeyID: k.ID, Hour: hour.Add(59 * time.Minute).In(time.FixedZone("IST", 5*3600+1800)), Reason: "REASON_VALID", Count: 3},
			{KeyID: k.ID, Hour: hour.Add(2 * time.Hour), Reason: "REASON_VALID", Count: 0},  // ignored
			{KeyID: k.ID, Hour: hour.Add(2 * time.Hour), Reason: "REASON_VALID", Count: -1}, // ignored
		}, nil)
		f.wantUsage(k.ID, hour, hour.Add(3*time.Hour),
			store.UsageCount{KeyID: k.ID, Hour: hour, Reason: "REASON_RATE_LIMITED", Count: 1},
			store.UsageCount{KeyID: k.ID, Hour: hour, Reason: "REASON_VALID", Count: 6},
			store.UsageCount{KeyID: k.ID, Hour: hour.Add(time.Hour), Reason: "REASON_VALID", Count: 5})
		// [from, to)
		f.wantUsage(k.ID, hour, hour.Add(time.Hour),
			store.UsageCount{KeyID: k.ID, Hour: hour, Reason: "REASON_RATE_LIMITED", Count: 1},
			store.UsageCount{KeyID: k.ID, Hour: hour, Reason: "REASON_VALID", Count: 6})
		f.wantUsage(k.ID, hour.Add(time.Hour), hour.Add(2*time.Hour),
			store.UsageCount{KeyID: k.ID, Hour: hour.Add(time.Hour), Reason: "REASON_VALID", Count: 5})
		f.wantUsage(k.ID, hour.Add(-time.Hour), hour)
		f.wantUsage(other.ID, hour, hour.Add(time.Hour),
			store.UsageCount{KeyID: other.ID, Hour: hour, Reason: "REASON_VALID", Count: 7})
		if got := f.get(k.ID); got.Version != 1 || !got.LastUsed.IsZero() {
			t.Errorf("Version %d, LastUsed %v after counting; want 1 and never: counts are not content", got.Version, got.LastUsed)
		}
		f.wantVerifies(2) // the two creates; usage is not audited
		if err := f.s.RecordUsage(f.ctx, nil, nil); err != nil {
			t.Errorf("RecordUsage of nothing: %v", err)
		}
	}},
	{"usage/missing-keys-dropped", func(t *testing.T, f *fixture) {
		kept := f.create(f.newKey())
		gone := f.create(f.newKey())
		f.recordUsage([]store.UsageCount{{KeyID: gone.ID, Hour: hour, Reason: "REASON_VALID", Count: 1}},
			map[string]time.Time{gone.ID: hour})
		f.delete(gone.ID)
		f.wantUsage(gone.ID, hour, hour.Add(time.Hour)) // went with the key
		used := hour.Add(time.Minute)
		f.recordUsage([]store.UsageCount{
			{KeyID: gone.ID, Hour: hour, Reason: "REASON_VALID", Count: 1},
			{KeyID: "key_missing", Hour: hour, Reason: "REASON_VALID", Count: 1},
			{KeyID: kept.ID, Hour: hour, Reason: "REASON_VALID", Count: 1},
		}, map[string]time.Time{gone.ID: used, "key_missing": used, kept.ID: used})
		f.wantUsage(kept.ID, hour, hour.Add(time.Hour), store.UsageCount{KeyID: kept.ID, Hour: hour, Reason: "REASON_VALID", Count: 1})
		f.wantUsage(gone.ID, hour, hour.Add(time.Hour))
		f.wantUsage("key_missing", hour, hour.Add(time.Hour))
		if got := f.get(kept.ID).LastUsed; !got.Equal(used) {
			t.Errorf("LastUsed = %v, want %v", got, used)
		}
		// A key created again under the id starts unused.
		again := f.newKey()
		again.ID = gone.ID
		if got := f.create(again); !got.LastUsed.IsZero() {
			t.Errorf("Create: LastUsed = %v, want zero", got.LastUsed)
		}
		if got := f.get(gone.ID).LastUsed; !got.IsZero() {
			t.Errorf("Get: LastUsed = %v, want zero", got)
		}
		f.wantUsage(gone.ID, hour, hour.Add(time.Hour))
	}},
	{"usage/last-used-moves-forward-only", func(t *testing.T, f *fixture) {
		k := f.create(f.newKey())
		t1, t2, t3 := hour.Add(time.Minute), hour.Add(2*time.Minute+time.Nanosecond), hour.Add(3*time.Minute)
		want := t2.Truncate(time.Microsecond)
		f.recordUsage(nil, map[string]time.Time{k.ID: t2})
		f.recordUsage(nil, map[string]time.Time{k.ID: t1})
		check := func(what string, got *keys.Key) {
			t.Helper()
			if !got.LastUsed.Equal(want) || got.LastUsed.Location() != time.UTC {
				t.Errorf("%s: LastUsed = %v, want %v", what, got.LastUsed, want)
			}
		}
		check("Get", f.get(k.ID))
		f.recordUsage(nil, map[string]time.Time{k.ID: want}) // the same time again
		check("Get", f.get(k.ID))
		want = t3
		f.recordUsage(nil, map[string]time.Time{k.ID: t3})
		got := f.get(k.ID)
		check("Get", got)
		if got.Version != 1 {
			t.Errorf("Version = %d after recording use, want 1: use is not content", got.Version)
		}
		byHash, err := f.s.GetByHash(f.ctx, k.Hash)
		if err != nil {
			t.Fatalf("GetByHash: %v", err)
		}
		check("GetByHash", byHash)
		for _, listed := range f.list(store.ListQuery{Limit: 10}) {
			check("List", listed)
		}
		before, after, err := f.s.Update(f.ctx, k.ID, func(k *keys.Key) error { k.Name = "renamed"; return nil }, auditUpdate)
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
		check("Update's before", before)
		check("Update's after", after)
		deleted, err := f.s.Delete(f.ctx, k.ID, func(k *keys.Key) error { check("Delete's fn", k); return nil }, auditDelete)
		if err != nil {
			t.Fatalf("Delete: %v", err)
		}
		check("Delete", deleted)
	}},
	{"usage/concurrent-with-deletes", func(t *testing.T, f *fixture) {
		// Batches naming keys being deleted neither fail nor deadlock.
		var ids []string
		for range 12 {
			ids = append(ids, f.create(f.newKey()).ID)
		}
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				for r := range 5 {
					var counts []store.UsageCount
					last := map[string]time.Time{}
					for i, id := range ids {
						// Each worker names the keys in its own order.
						id = ids[(i*(w+1))%len(ids)]
						counts = append(counts, store.UsageCount{KeyID: id, Hour: hour, Reason: fmt.Sprint("R", r%2), Count: 1})
						last[id] = hour.Add(time.Duration(w*10+r) * time.Second)
					}
					if err := f.s.RecordUsage(f.ctx, counts, last); err != nil {
						t.Errorf("RecordUsage: %v", err)
					}
				}
			})
		}
		wg.Go(func() {
			for _, id := range ids[:6] {
				if _, err := f.s.Delete(f.ctx, id, nil, auditDelete); err != nil {
					t.Errorf("Delete: %v", err)
				}
			}
		})
		wg.Wait()
		for _, id := range ids[:6] {
			f.wantNotFound(id)
		}
		for _, id := range ids[6:] {
			if f.get(id).LastUsed.IsZero() {
				t.Errorf("key %s: LastUsed not recorded", id)
			}
		}
	}},
	{"list/unused-before", func(t *testing.T, f *fixture) {
		never := f.create(f.newKey())   // created now, never used
		recent := f.create(f.newKey())  // used in an hour
		longAgo := f.create(f.newKey()) // used a day ago (before its creation, as far as the store knows)
		other := f.createNamed("other") // never used
		now := time.Now()
		f.recordUsage(nil, map[string]time.Time{recent.ID: now.Add(time.Hour), longAgo.ID: now.Add(-24 * time.Hour)})
		f.wantIDs(f.list(store.ListQuery{UnusedBefore: now.Add(30 * time.Minute), Limit: 10}), never.ID, longAgo.ID, other.ID)
		f.wantIDs(f.list(store.ListQuery{UnusedBefore: now.Add(2 * time.Hour), Limit: 10}), never.ID, recent.ID, longAgo.ID, other.ID)
		f.wantIDs(f.list(store.ListQuery{UnusedBefore: now.Add(-time.Hour), Limit: 10}), longAgo.ID)
		// ANDed with the other filters and the page.
		f.wantIDs(f.list(store.ListQuery{UnusedBefore: now.Add(30 * time.Minute), NameContains: "other", Limit: 10}), other.ID)
		f.wantIDs(f.list(store.ListQuery{UnusedBefore: now.Add(30 * time.Minute), AfterID: never.ID, Limit: 1}), longAgo.ID)
	}},
	{"sealed/round-trip-and-replace", func(t *testing.T, f *fixture) {
		k := f.newKey()
		k.Sealed = []byte{0, 1, 2, 0xfe, 0xff}
		created := f.create(k)
		f.wantEqual("Get", created, f.get(k.ID))
		byHash, err := f.s.GetByHash(f.ctx, k.Hash)
		if err != nil {
			t.Fatalf("GetByHash: %v", err)
		}
		f.wantEqual("GetByHash", created, byHash)
		all := f.list(store.ListQuery{Limit: 10})
		f.wantIDs(all, k.ID)
		if len(all) == 1 {
			f.wantEqual("List", created, all[0])
		}
		if !slices.Equal(created.Sealed, k.Sealed) {
			t.Errorf("Create: Sealed = %x, want %x", created.Sealed, k.Sealed)
		}
		// Kept by an update that leaves it, replaced by one that sets it.
		_, kept := f.update(k.ID, func(k *keys.Key) { k.Name = "renamed" })
		if !slices.Equal(kept.Sealed, k.Sealed) {
			t.Errorf("after renaming: Sealed = %x, want %x", kept.Sealed, k.Sealed)
		}
		before, replaced := f.update(k.ID, func(k *keys.Key) { k.Sealed = []byte("resealed") })
		if !slices.Equal(before.Sealed, k.Sealed) || string(replaced.Sealed) != "resealed" {
			t.Errorf("replacing: before %q, after %q", before.Sealed, replaced.Sealed)
		}
		f.wantEqual("Get after replacing", replaced, f.get(k.ID))
		deleted, err := f.s.Delete(f.ctx, k.ID, nil, auditDelete)
		if err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if string(deleted.Sealed) != "resealed" {
			t.Errorf("Delete: Sealed = %q, want resealed", deleted.Sealed)
		}
		// Empty reads back nil.
		empty := f.newKey()
		empty.Sealed = []byte{}
		for name, got := range map[string]*keys.Key{"Create": f.create(empty), "Get": f.get(empty.ID)} {
			if got.Sealed != nil {
				t.Errorf("%s: Sealed = %#v, want nil", name, got.Sealed)
			}
		}
	}},
}

func (f *fixture) recordUsage(counts []store.UsageCount, lastUsed map[string]time.Time) {
	f.t.Helper()
	if err := f.s.RecordUsage(f.ctx, counts, lastUsed); err != nil {
		f.t.Fatalf("RecordUsage: %v", err)
	}
}

// update edits key id through fn, which must succeed.
func (f *fixture) update(id string, fn func(*keys.Key)) (before, after *keys.Key) {
	f.t.Helper()
	before, after, err := f.s.Update(f.ctx, id, func(k *keys.Key) error { fn(k); return nil }, auditUpdate)
	if err != nil {
		f.t.Fatalf("Update %s: %v", id, err)
	}
	return before, after
}

func (f *fixture) wantUsage(id string, from, to time.Time, want ...store.UsageCount) {
	f.t.Helper()
	got, err := f.s.Usage(f.ctx, id, from, to)
	if err != nil {
		f.t.Fatalf("Usage: %v", err)
	}
	ok := len(got) == len(want)
	for i := range got {
		if !ok {
			break
		}
		g, w := got[i], want[i]
		ok = g.KeyID == w.KeyID && g.Hour.Equal(w.Hour) && g.Hour.Location() == time.UTC && g.Reason == w.Reason && g.Count == w.Count
	}
	if !ok {
		f.t.Errorf("Usage(%s, %v, %v) = %+v, want %+v", id, from, to, got, want)
	}
}
