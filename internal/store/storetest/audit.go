package storetest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/store"
)

var auditTests = []test{
	{"audit/one-event-per-write", func(t *testing.T, f *fixture) {
		k := f.create(f.newKey())
		if _, _, err := f.s.Update(f.ctx, k.ID, func(k *keys.Key) error { k.Name = "renamed"; return nil }, auditUpdate); err != nil {
			t.Fatalf("Update: %v", err)
		}
		f.appendAudit(store.Audit{Action: audit.ActionReveal, KeyID: k.ID})
		f.delete(k.ID)
		var got []string
		for _, e := range f.events() {
			got = append(got, e.Action)
		}
		want := []string{audit.ActionCreate, audit.ActionUpdate, audit.ActionReveal, audit.ActionDelete}
		if !slices.Equal(got, want) {
			t.Errorf("actions = %q, want %q", got, want)
		}
		f.wantVerifies(4)
	}},
	{"audit/no-event-for-failed-writes", func(t *testing.T, f *fixture) {
		a := f.create(f.newKey())
		if _, err := f.s.Create(f.ctx, f.newKey(), "req-1", auditCreate); err != nil {
			t.Fatalf("Create: %v", err)
		}
		errVeto := errors.New("veto")
		noAction := store.Audit{Actor: "key_admin"}
		for _, c := range []struct {
			name  string
			write func() error
		}{
			{"update/fn-error", func() error {
				_, _, err := f.s.Update(f.ctx, a.ID, func(*keys.Key) error { return errVeto }, auditUpdate)
				return err
			}},
			{"update/etag-conflict", func() error {
				_, _, err := f.s.Update(f.ctx, a.ID, func(*keys.Key) error { return keys.ErrConflict }, auditUpdate)
				return err
			}},
			{"update/not-found", func() error {
				_, _, err := f.s.Update(f.ctx, "key_missing", func(*keys.Key) error { return nil }, auditUpdate)
				return err
			}},
			{"update/duplicate-hash", func() error {
				other := f.create(f.newKey()) // one more event, counted below
				_, _, err := f.s.Update(f.ctx, other.ID, func(k *keys.Key) error { k.Hash = bytes.Clone(a.Hash); return nil }, auditUpdate)
				return err
			}},
			{"update/no-action", func() error {
				_, _, err := f.s.Update(f.ctx, a.ID, func(*keys.Key) error {
					t.Error("fn called for an update without an audit action")
					return nil
				}, noAction)
				return err
			}},
			{"create/duplicate-request-id", func() error {
				_, err := f.s.Create(f.ctx, f.newKey(), "req-1", auditCreate)
				return err
			}},
			{"create/duplicate-id", func() error {
				dup := f.newKey()
				dup.ID = a.ID
				_, err := f.s.Create(f.ctx, dup, "", auditCreate)
				return err
			}},
			{"create/duplicate-hash", func() error {
				dup := f.newKey()
				dup.Hash = bytes.Clone(a.Hash)
				_, err := f.s.Create(f.ctx, dup, "", auditCreate)
				return err
			}},
			{"create/no-action", func() error {
				k := f.newKey()
				_, err := f.s.Create(f.ctx, k, "", noAction)
				f.wantNotFound(k.ID)
				return err
			}},
			{"delete/fn-error", func() error {
				_, err := f.s.Delete(f.ctx, a.ID, func(*keys.Key) error { return errVeto }, auditDelete)
				return err
			}},
			{"delete/etag-conflict", func() error {
				_, err := f.s.Delete(f.ctx, a.ID, func(*keys.Key) error { return keys.ErrConflict }, auditDelete)
				return err
			}},
			{"delete/not-found", func() error {
				_, err := f.s.Delete(f.ctx, "key_missing", nil, auditDelete)
				return err
			}},
			{"delete/no-action", func() error {
				_, err := f.s.Delete(f.ctx, a.ID, nil, noAction)
				return err
			}},
			{"append/no-action", func() error { return f.s.AppendAudit(f.ctx, noAction) }},
		} {
			before := len(f.events())
			err := c.write()
			if err == nil {
				t.Errorf("%s: succeeded, want an error", c.name)
			}
			if strings.HasSuffix(c.name, "/no-action") {
				var invalid *keys.InvalidArgumentError
				if !errors.As(err, &invalid) {
					t.Errorf("%s: err = %v, want an InvalidArgumentError", c.name, err)
				}
			}
			want := before
			if c.name == "update/duplicate-hash" {
				want++ // the other key's create
			}
			if got := len(f.events()); got != want {
				t.Errorf("%s: %d events, want %d", c.name, got, want)
			}
		}
		f.get(a.ID) // still there
		f.wantVerifies(3)
	}},
	{"audit/event-fields", func(t *testing.T, f *fixture) {
		k := f.newKey()
		k.Scopes = []string{"keys:read"}
		k.Sealed = []byte("sealed secret")
		a := store.Audit{Actor: "key_admin1", Action: audit.ActionCreate, KeyID: "key_ignored", Source: "192.0.2.1:4242", Detail: "first"}
		start := time.Now().UTC().Truncate(time.Microsecond)
		created, err := f.s.Create(f.ctx, k, "", a)
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		before, after, err := f.s.Update(f.ctx, k.ID, func(k *keys.Key) error {
			k.Name = "renamed"
			k.Scopes = []string{"keys:read", "keys:write"}
			return nil
		}, store.Audit{Actor: "key_admin2", Action: audit.ActionUpdate, Source: "[2001:db8::1]:443"})
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
		deleted, err := f.s.Delete(f.ctx, k.ID, nil, store.Audit{Actor: "key_admin1", Action: audit.ActionDelete})
		if err != nil {
			t.Fatalf("Delete: %v", err)
		}
		f.appendAudit(store.Audit{Action: audit.ActionSignInFailed, KeyID: "key_gone", Source: "198.51.100.7:1", Detail: "unknown key"})
		end := time.Now()

		events := f.events()
		if len(events) != 4 {
			t.Fatalf("%d events, want 4", len(events))
		}
		want := []*audit.Event{
			{Seq: 1, Actor: "key_admin1", Action: audit.ActionCreate, KeyID: k.ID, Source: "192.0.2.1:4242", Detail: "first",
				After: audit.SnapshotOf(created)},
			{Seq: 2, Actor: "key_admin2", Action: audit.ActionUpdate, KeyID: k.ID, Source: "[2001:db8::1]:443",
				Before: audit.SnapshotOf(before), After: audit.SnapshotOf(after), Changed: []string{"name", "scopes"}},
			{Seq: 3, Actor: "key_admin1", Action: audit.ActionDelete, KeyID: k.ID, Before: audit.SnapshotOf(deleted)},
			{Seq: 4, Action: audit.ActionSignInFailed, KeyID: "key_gone", Source: "198.51.100.7:1", Detail: "unknown key"},
		}
		var prev *audit.Event
		for i, got := range events {
			w := want[i]
			wantEvent(t, w, got)
			if got.Time.Before(start) || got.Time.After(end) || got.Time.Location() != time.UTC || got.Time.Nanosecond()%1000 != 0 {
				t.Errorf("event %d: Time %v, want UTC microseconds in [%v, %v]", w.Seq, got.Time, start, end)
			}
			if prev != nil && got.Time.Before(prev.Time) {
				t.Errorf("event %d: Time %v before the previous event's %v", w.Seq, got.Time, prev.Time)
			}
			switch {
			case prev == nil && got.PrevHash != nil:
				t.Errorf("event 1: PrevHash %x, want nil", got.PrevHash)
			case prev != nil && !bytes.Equal(got.PrevHash, prev.Hash):
				t.Errorf("event %d: PrevHash does not link to event %d", w.Seq, prev.Seq)
			}
			if !bytes.Equal(got.Hash, got.Seal()) {
				t.Errorf("event %d: Hash is not Seal()", w.Seq)
			}
			prev = got
		}
		if !events[0].After.Recoverable {
			t.Error("event 1: After.Recoverable = false for a key with a sealed secret")
		}
		for _, e := range events {
			b, _ := json.Marshal(e)
			if bytes.Contains(b, []byte("sealed secret")) || bytes.Contains(b, []byte(fmt.Sprintf("%x", k.Hash))) {
				t.Errorf("event %d carries the sealed secret or the hash: %s", e.Seq, b)
			}
		}
	}},
	{"audit/text-stored-as-valid-utf8", func(t *testing.T, f *fixture) {
		f.appendAudit(store.Audit{Actor: "a\xffb", Action: audit.ActionReveal, KeyID: "key_\x00", Source: "s\xc3", Detail: "nul \x00 and 🔑 <&>"})
		e := f.events()[0]
		for name, s := range map[string]string{"Actor": e.Actor, "KeyID": e.KeyID, "Source": e.Source, "Detail": e.Detail} {
			if !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
				t.Errorf("%s = %q, want valid UTF-8 without NUL", name, s)
			}
		}
		if e.Detail != "nul \uFFFD and 🔑 <&>" {
			t.Errorf("Detail = %q", e.Detail)
		}
		f.wantVerifies(1)
	}},
	{"audit/chain-of-mixed-writes-verifies", func(t *testing.T, f *fixture) {
		n := int64(0)
		for i := range 3 {
			k := f.newKey()
			k.Name = "Schlüssel 🔑 \"quoted\" <b>&amp;</b> " + strings.Repeat("x", i)
			k.Description = "line\nbreak\ttab \\ back"
			k.Metadata = map[string]string{"équipe": "données", "html": "<a&b>", "": "empty", "z": "last", "a": "first"}
			k.ExpireTime = time.Date(2031, 2, 3, 4, 5, 6, 123456789, time.FixedZone("IST", 5*3600+1800))
			k.AllowedCIDRs = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}
			k.RateLimit = keys.RateLimit{Limit: 50, Period: 1500 * time.Millisecond, Burst: 10}
			k.Quota = keys.Quota{Limit: 1000, Refill: keys.RefillMonthly}
			k.PrevHash, k.PrevStart, k.PrevLast4 = randomHash(t), "kw_test_Prev12", "pq12"
			k.PrevExpire = time.Now().Add(time.Hour)
			k.Sealed = []byte{0, 1, 2, 0xff}
			f.create(k)
			n++
			for _, fn := range []func(*keys.Key){
				func(k *keys.Key) { k.State = keys.StateDisabled; k.ClearPrevious() },
				func(k *keys.Key) {
					k.PrevHash, k.PrevStart, k.PrevLast4 = k.Hash, k.Start, k.Last4
					k.PrevExpire = time.Now().Add(time.Minute)
					k.Hash, k.Start, k.Last4, k.Sealed = randomHash(t), "kw_test_New123", "new4", []byte("resealed")
				},
				func(k *keys.Key) { k.Quota, k.Metadata, k.Scopes = keys.Quota{}, nil, nil },
				func(*keys.Key) {}, // a write that changes nothing is recorded too
			} {
				if _, _, err := f.s.Update(f.ctx, k.ID, func(k *keys.Key) error { fn(k); return nil }, auditUpdate); err != nil {
					t.Fatalf("Update: %v", err)
				}
				n++
			}
			f.appendAudit(store.Audit{Actor: "key_admin", Action: audit.ActionLeakReported, KeyID: k.ID, Detail: "found on a paste site 🙈"})
			n++
			if i != 1 {
				f.delete(k.ID)
				n++
			}
		}
		f.wantVerifies(n)
		// Every event read back seals to what was written, whichever way
		// it is read.
		page, err := f.s.ListAudit(f.ctx, store.AuditQuery{Limit: int(n)})
		if err != nil {
			t.Fatalf("ListAudit: %v", err)
		}
		for _, e := range page {
			if !bytes.Equal(e.Hash, e.Seal()) {
				t.Errorf("ListAudit: event %d does not seal to its hash", e.Seq)
			}
		}
	}},
	{"audit/altered-event-fails-verification", func(t *testing.T, f *fixture) {
		f.writeEvents(4)
		f.wantVerifies(4)
		f.tamper("UPDATE audit_events SET detail = 'x' WHERE seq = 2")
		f.wantBroken(1, "event 2 was altered")
	}},
	{"audit/relinked-event-fails-verification", func(t *testing.T, f *fixture) {
		f.writeEvents(4)
		// Resealing an edited event is not enough: the next one still
		// links to the original.
		e := f.events()[1]
		e.Detail = "x"
		e.Hash = e.Seal()
		f.tamper("UPDATE audit_events SET detail = 'x', hash = ? WHERE seq = 2", e.Hash)
		f.wantBroken(2, "event 3 does not link to event 2")
	}},
	{"audit/deleted-event-fails-verification", func(t *testing.T, f *fixture) {
		f.writeEvents(4)
		f.tamper("DELETE FROM audit_events WHERE seq = 3")
		f.wantBroken(2, "event 4 follows event 2")
	}},
	{"audit/deleted-newest-event-shows-at-next-append", func(t *testing.T, f *fixture) {
		f.writeEvents(4)
		f.tamper("DELETE FROM audit_events WHERE seq = 4")
		// A truncated chain verifies as far as it goes; the next event
		// continues from the removed one, which shows.
		f.wantVerifies(3)
		f.appendAudit(store.Audit{Action: audit.ActionReveal})
		f.wantBroken(3, "event 5 follows event 3")
	}},
	{"audit/concurrent-appends-gap-free", func(t *testing.T, f *fixture) {
		const workers, rounds = 8, 4
		shared := f.create(f.newKey())
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for r := range rounds {
					if _, err := f.s.Create(f.ctx, f.newKey(), "", auditCreate); err != nil {
						t.Errorf("Create: %v", err)
					}
					if err := f.s.AppendAudit(f.ctx, store.Audit{Action: audit.ActionReveal, Detail: fmt.Sprint(w, r)}); err != nil {
						t.Errorf("AppendAudit: %v", err)
					}
					if _, _, err := f.s.Update(f.ctx, shared.ID, func(k *keys.Key) error { k.Name = fmt.Sprint(w, r); return nil }, auditUpdate); err != nil {
						t.Errorf("Update: %v", err)
					}
				}
			})
		}
		wg.Wait()
		f.wantVerifies(1 + workers*rounds*3)
	}},
	{"audit/list-newest-first", func(t *testing.T, f *fixture) {
		a := f.create(f.newKey())                                           // 1
		b := f.create(f.newKey())                                           // 2
		f.update(a.ID, func(*keys.Key) {})                                  // 3
		f.appendAudit(store.Audit{Action: audit.ActionReveal, KeyID: a.ID}) // 4
		f.update(b.ID, func(*keys.Key) {})                                  // 5
		f.delete(a.ID)                                                      // 6
		f.appendAudit(store.Audit{Action: audit.ActionSignInFailed})        // 7
		for _, c := range []struct {
			q    store.AuditQuery
			want []int64
		}{
			{store.AuditQuery{Limit: 4}, []int64{7, 6, 5, 4}},
			{store.AuditQuery{BeforeSeq: 4, Limit: 4}, []int64{3, 2, 1}},
			{store.AuditQuery{BeforeSeq: 1, Limit: 4}, nil},
			{store.AuditQuery{KeyID: a.ID, Limit: 2}, []int64{6, 4}},
			{store.AuditQuery{KeyID: a.ID, BeforeSeq: 4, Limit: 10}, []int64{3, 1}},
			{store.AuditQuery{KeyID: b.ID, Limit: 10}, []int64{5, 2}},
			{store.AuditQuery{KeyID: "key_missing", Limit: 10}, nil},
		} {
			got, err := f.s.ListAudit(f.ctx, c.q)
			if err != nil {
				t.Fatalf("ListAudit(%+v): %v", c.q, err)
			}
			var seqs []int64
			for _, e := range got {
				seqs = append(seqs, e.Seq)
				if c.q.KeyID != "" && e.KeyID != c.q.KeyID {
					t.Errorf("ListAudit(%+v): event %d is key %s's", c.q, e.Seq, e.KeyID)
				}
			}
			if !slices.Equal(seqs, c.want) {
				t.Errorf("ListAudit(%+v) = events %v, want %v", c.q, seqs, c.want)
			}
		}
		for _, q := range []store.AuditQuery{{Limit: 0}, {Limit: -1}, {Limit: 5, BeforeSeq: -1}} {
			_, err := f.s.ListAudit(f.ctx, q)
			var invalid *keys.InvalidArgumentError
			if !errors.As(err, &invalid) {
				t.Errorf("ListAudit(%+v): err = %v, want an InvalidArgumentError", q, err)
			}
		}
	}},
	{"audit/scan-stops-at-fn-error", func(t *testing.T, f *fixture) {
		f.writeEvents(3)
		errStop := errors.New("stop")
		var seen []int64
		err := f.s.ScanAudit(f.ctx, func(e *audit.Event) error {
			seen = append(seen, e.Seq)
			if e.Seq == 2 {
				return errStop
			}
			return nil
		})
		if !errors.Is(err, errStop) {
			t.Errorf("ScanAudit: err = %v, want fn's", err)
		}
		if !slices.Equal(seen, []int64{1, 2}) {
			t.Errorf("fn saw events %v, want [1 2]", seen)
		}
	}},
	{"audit/scan-reads-every-batch", func(t *testing.T, f *fixture) {
		n := store.ScanBatch*2 + 1
		f.writeEvents(n)
		f.wantVerifies(int64(n))
	}},
}

// writeEvents appends n events about no key.
func (f *fixture) writeEvents(n int) {
	f.t.Helper()
	for i := range n {
		f.appendAudit(store.Audit{Actor: "key_admin", Action: audit.ActionReveal, Detail: fmt.Sprint("event ", i+1)})
	}
}

func (f *fixture) appendAudit(a store.Audit) {
	f.t.Helper()
	if err := f.s.AppendAudit(f.ctx, a); err != nil {
		f.t.Fatalf("AppendAudit: %v", err)
	}
}

// events is the whole trail, oldest first.
func (f *fixture) events() []*audit.Event {
	f.t.Helper()
	var out []*audit.Event
	if err := f.s.ScanAudit(f.ctx, func(e *audit.Event) error { out = append(out, e); return nil }); err != nil {
		f.t.Fatalf("ScanAudit: %v", err)
	}
	return out
}

// verify feeds the trail to a Verifier.
func (f *fixture) verify() (int64, error) {
	var v audit.Verifier
	err := f.s.ScanAudit(f.ctx, v.Add)
	return v.Count(), err
}

func (f *fixture) wantVerifies(n int64) {
	f.t.Helper()
	count, err := f.verify()
	if err != nil || count != n {
		f.t.Errorf("verified %d events, err %v; want %d, nil", count, err, n)
	}
}

// wantBroken fails unless verification stops with audit.ErrBroken after n
// good events, with an error saying what.
func (f *fixture) wantBroken(n int64, what string) {
	f.t.Helper()
	count, err := f.verify()
	if !errors.Is(err, audit.ErrBroken) || count != n || !strings.Contains(fmt.Sprint(err), what) {
		f.t.Errorf("verified %d events, err %v; want %d and %q", count, err, n, what)
	}
}

func (f *fixture) tamper(query string, args ...any) {
	f.t.Helper()
	if err := f.exec(f.ctx, query, args...); err != nil {
		f.t.Fatalf("%s: %v", query, err)
	}
}

// wantEvent compares what an event records (not its time and hashes).
func wantEvent(t *testing.T, want, got *audit.Event) {
	t.Helper()
	var d []string
	field := func(name string, w, g any) {
		wj, _ := json.Marshal(w)
		gj, _ := json.Marshal(g)
		if !bytes.Equal(wj, gj) {
			d = append(d, fmt.Sprintf("%s = %s, want %s", name, gj, wj))
		}
	}
	field("Seq", want.Seq, got.Seq)
	field("Actor", want.Actor, got.Actor)
	field("Action", want.Action, got.Action)
	field("KeyID", want.KeyID, got.KeyID)
	field("Source", want.Source, got.Source)
	field("Detail", want.Detail, got.Detail)
	field("Before", want.Before, got.Before)
	field("After", want.After, got.After)
	field("Changed", want.Changed, got.Changed)
	if len(d) > 0 {
		t.Errorf("event %d:\n  %s", want.Seq, strings.Join(d, "\n  "))
	}
}
