// Package storetest holds the conformance suite every store.Store
// implementation must pass, so the backends cannot drift apart: each
// backend's test file only says how to open a fresh, empty store.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/store"
)

// Exec runs one SQL statement directly on a store's database, behind the
// store's back: the suite tampers with the audit trail through it, to see
// that verification notices. The statements are plain SQL that PostgreSQL
// and SQLite both accept, but for their parameters, written ? (PostgreSQL's
// Exec numbers them).
type Exec func(ctx context.Context, query string, args ...any) error

// Run runs the suite. open must return a new, empty store for each call, and
// an Exec on that store's database; Run closes the store when the test ends.
// Subtests run in parallel.
func Run(t *testing.T, open func(t *testing.T) (store.Store, Exec)) {
	for _, tc := range slices.Concat(tests, auditTests, usageTests) {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, exec := open(t)
			t.Cleanup(func() { _ = s.Close() })
			tc.run(t, &fixture{t: t, s: s, exec: exec, ctx: t.Context()})
		})
	}
}

// test is one conformance test, run on a fresh store.
type test struct {
	name string
	run  func(t *testing.T, f *fixture)
}

// Audits of the writes whose events a test does not look at.
var (
	auditCreate = store.Audit{Actor: "key_admin", Action: audit.ActionCreate}
	auditUpdate = store.Audit{Actor: "key_admin", Action: audit.ActionUpdate}
	auditDelete = store.Audit{Actor: "key_admin", Action: audit.ActionDelete}
)

var tests = []test{
	{"ping/ok", func(t *testing.T, f *fixture) {
		if err := f.s.Ping(f.ctx); err != nil {
			t.Fatalf("Ping: %v", err)
		}
	}},

	// Get.
	{"get/not-found", func(t *testing.T, f *fixture) {
		f.create(f.newKey())
		_, err := f.s.Get(f.ctx, "key_missing")
		wantIs(t, err, keys.ErrNotFound)
	}},
	{"get-by-hash/not-found", func(t *testing.T, f *fixture) {
		f.create(f.newKey())
		_, err := f.s.GetByHash(f.ctx, randomHash(t))
		wantIs(t, err, keys.ErrNotFound)
	}},

	// Create.
	{"create/ok-round-trip", func(t *testing.T, f *fixture) {
		k := f.newKey()
		k.Description = "used by the billing job"
		k.Environment = "live"
		k.State = keys.StateDisabled
		k.ExpireTime = time.Now().Add(90 * 24 * time.Hour)
		k.LastUsed = time.Now().Add(-time.Hour) // the store's: ignored
		k.QuotaUsage = keys.QuotaUsage{Period: "2031-03", Used: 3}
		k.Sealed = []byte("sealed secret")
		start := time.Now().UTC().Truncate(time.Microsecond)
		got, err := f.s.Create(f.ctx, k, "", auditCreate)
		end := time.Now()
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		if got.Version != 1 {
			t.Errorf("Version = %d, want 1", got.Version)
		}
		if !got.CreateTime.Equal(got.UpdateTime) {
			t.Errorf("CreateTime %v != UpdateTime %v", got.CreateTime, got.UpdateTime)
		}
		if got.CreateTime.Before(start) || got.CreateTime.After(end) {
			t.Errorf("CreateTime %v outside [%v, %v]", got.CreateTime, start, end)
		}
		want := stored(k)
		want.Version, want.CreateTime, want.UpdateTime = 1, got.CreateTime, got.UpdateTime
		f.wantEqual("Create", want, got)
		f.wantEqual("Get", got, f.get(k.ID))
		byHash, err := f.s.GetByHash(f.ctx, k.Hash)
		if err != nil {
			t.Fatalf("GetByHash: %v", err)
		}
		f.wantEqual("GetByHash", got, byHash)
	}},
	{"create/does-not-modify-input", func(t *testing.T, f *fixture) {
		k := f.newKey()
		k.Metadata = nil
		f.create(k)
		if k.Version != 0 || !k.CreateTime.IsZero() || !k.UpdateTime.IsZero() || k.Metadata != nil {
			t.Errorf("Create changed its argument: %+v", k)
		}
	}},
	{"create/empty-id-is-invalid", func(t *testing.T, f *fixture) {
		k := f.newKey()
		k.ID = ""
		_, err := f.s.Create(f.ctx, k, "", auditCreate)
		var invalid *keys.InvalidArgumentError
		if !errors.As(err, &invalid) || invalid.Field != "id" {
			t.Fatalf("Create with empty id: err = %v, want an invalid id", err)
		}
	}},
	{"create/duplicate-id", func(t *testing.T, f *fixture) {
		first := f.create(f.newKey())
		dup := f.newKey()
		dup.ID = first.ID
		_, err := f.s.Create(f.ctx, dup, "", auditCreate)
		wantIs(t, err, keys.ErrAlreadyExists)
		wantNoSecret(t, err, dup.Hash)
		f.wantEqual("Get after refused create", first, f.get(first.ID))
		f.wantNotFoundByHash(dup.Hash)
	}},
	{"create/duplicate-hash", func(t *testing.T, f *fixture) {
		first := f.create(f.newKey())
		dup := f.newKey()
		dup.Hash = bytes.Clone(first.Hash)
		_, err := f.s.Create(f.ctx, dup, "", auditCreate)
		wantIs(t, err, keys.ErrAlreadyExists)
		wantNoSecret(t, err, dup.Hash)
		f.wantNotFound(dup.ID)
		f.wantEqual("Get after refused create", first, f.get(first.ID))
	}},
	{"create/request-id-idempotent", func(t *testing.T, f *fixture) {
		first, err := f.s.Create(f.ctx, f.newKey(), "req-1", auditCreate)
		if err != nil {
			t.Fatalf("first Create: %v", err)
		}
		retry := f.newKey() // a retry mints a new id and secret
		_, err = f.s.Create(f.ctx, retry, "req-1", auditCreate)
		wantIs(t, err, keys.ErrAlreadyExists)
		if err != nil && !strings.Contains(err.Error(), first.ID) {
			t.Errorf("error %q does not name the existing key %s", err, first.ID)
		}
		wantNoSecret(t, err, first.Hash)
		wantNoSecret(t, err, retry.Hash)
		f.wantNotFound(retry.ID)
		f.wantIDs(f.list(store.ListQuery{Limit: 10}), first.ID)
	}},
	{"create/request-id-named-even-if-hash-also-collides", func(t *testing.T, f *fixture) {
		first, err := f.s.Create(f.ctx, f.newKey(), "req-1", auditCreate)
		if err != nil {
			t.Fatalf("first Create: %v", err)
		}
		retry := f.newKey()
		retry.Hash = bytes.Clone(first.Hash)
		_, err = f.s.Create(f.ctx, retry, "req-1", auditCreate)
		wantIs(t, err, keys.ErrAlreadyExists)
		if err != nil && !strings.Contains(err.Error(), first.ID) {
			t.Errorf("error %q does not name the existing key %s", err, first.ID)
		}
	}},
	{"create/request-id-concurrent-creates-one-key", func(t *testing.T, f *fixture) {
		const n = 10
		ks := make([]*keys.Key, n)
		for i := range ks {
			ks[i] = f.newKey()
		}
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { _, errs[i] = f.s.Create(f.ctx, ks[i], "req-race", auditCreate) })
		}
		wg.Wait()
		var winner string
		for i, err := range errs {
			if err == nil {
				if winner != "" {
					t.Fatalf("both %s and %s were created with one request_id", winner, ks[i].ID)
				}
				winner = ks[i].ID
			}
		}
		if winner == "" {
			t.Fatalf("no create succeeded: %v", errors.Join(errs...))
		}
		for _, err := range errs {
			if err != nil && (!errors.Is(err, keys.ErrAlreadyExists) || !strings.Contains(err.Error(), winner)) {
				t.Errorf("losing create: err = %v, want already exists naming %s", err, winner)
			}
		}
		f.wantIDs(f.list(store.ListQuery{Limit: 100}), winner)
	}},
	{"create/empty-request-ids-never-collide", func(t *testing.T, f *fixture) {
		a := f.create(f.newKey())
		b := f.create(f.newKey())
		f.wantIDs(f.list(store.ListQuery{Limit: 10}), a.ID, b.ID)
	}},
	{"create/zero-times-read-back-zero", func(t *testing.T, f *fixture) {
		k := f.newKey()
		k.ExpireTime, k.LastUsed = time.Time{}, time.Time{}
		got := f.get(f.create(k).ID)
		if !got.ExpireTime.IsZero() || !got.LastUsed.IsZero() {
			t.Errorf("ExpireTime %v, LastUsed %v; want both zero", got.ExpireTime, got.LastUsed)
		}
	}},
	{"create/times-read-back-utc-microseconds", func(t *testing.T, f *fixture) {
		india := time.FixedZone("IST", 5*3600+1800)
		k := f.newKey()
		k.ExpireTime = time.Date(2031, 2, 3, 4, 5, 6, 123456789, india)
		lastUsed := time.Date(1999, 12, 31, 23, 59, 59, 999999999, india)
		f.create(k)
		f.recordUsage(nil, map[string]time.Time{k.ID: lastUsed})
		got := f.get(k.ID)
		for _, c := range []struct {
			field     string
			got, want time.Time
		}{
			{"ExpireTime", got.ExpireTime, k.ExpireTime.Truncate(time.Microsecond)},
			{"LastUsed", got.LastUsed, lastUsed.Truncate(time.Microsecond)},
		} {
			if !c.got.Equal(c.want) || c.got.Location() != time.UTC {
				t.Errorf("%s = %v, want %v in UTC", c.field, c.got, c.want.UTC())
			}
		}
	}},
	{"create/unicode-round-trip", func(t *testing.T, f *fixture) {
		k := f.newKey()
		k.Name = "Schlüssel 🔑 für Prüfung — テスト"
		k.Description = "Ωmega ≠ alpha; \"quoted\" 'single' \\ back"
		k.Metadata = map[string]string{"équipe": "données", "emoji": "🚀"}
		want := f.create(k)
		got := f.get(k.ID)
		f.wantEqual("Get", want, got)
		if got.Name != k.Name {
			t.Errorf("Name = %q, want %q", got.Name, k.Name)
		}
	}},
	{"create/metadata-round-trip", func(t *testing.T, f *fixture) {
		k := f.newKey()
		k.Metadata = map[string]string{
			"team": "core", "empty": "", "quote": `"x" \ y`, "html": "<a&b>", "newline": "a\nb", "": "empty key",
		}
		got := f.get(f.create(k).ID)
		if !maps.Equal(got.Metadata, k.Metadata) {
			t.Errorf("Metadata = %q, want %q", got.Metadata, k.Metadata)
		}
	}},
	{"create/nil-scopes-and-metadata-read-back-empty-not-nil", func(t *testing.T, f *fixture) {
		k := f.newKey()
		k.Scopes, k.Metadata = nil, nil
		created := f.create(k)
		for name, got := range map[string]*keys.Key{"Create": created, "Get": f.get(k.ID)} {
			if got.Scopes == nil || len(got.Scopes) != 0 {
				t.Errorf("%s: Scopes = %#v, want empty and non-nil", name, got.Scopes)
			}
			if got.Metadata == nil || len(got.Metadata) != 0 {
				t.Errorf("%s: Metadata = %#v, want empty and non-nil", name, got.Metadata)
			}
		}
	}},
	{"create/scopes-keep-order", func(t *testing.T, f *fixture) {
		k := f.newKey()
		k.Scopes = []string{"write", "admin", "read", "keys:list"}
		got := f.get(f.create(k).ID)
		if !slices.Equal(got.Scopes, k.Scopes) {
			t.Errorf("Scopes = %q, want %q", got.Scopes, k.Scopes)
		}
	}},

	// Update.
	{"update/bumps-version", func(t *testing.T, f *fixture) {
		created := f.create(f.newKey())
		before, after, err := f.s.Update(f.ctx, created.ID, func(k *keys.Key) error {
			k.Name = "renamed"
			return nil
		}, auditUpdate)
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
		f.wantEqual("before", created, before)
		if after.Version != 2 || after.Name != "renamed" {
			t.Errorf("after: Version %d, Name %q; want 2, renamed", after.Version, after.Name)
		}
		if !after.CreateTime.Equal(created.CreateTime) || after.UpdateTime.Before(created.UpdateTime) {
			t.Errorf("after: CreateTime %v UpdateTime %v; created at %v", after.CreateTime, after.UpdateTime, created.CreateTime)
		}
		f.wantEqual("Get", after, f.get(created.ID))
		_, again, err := f.s.Update(f.ctx, created.ID, func(*keys.Key) error { return nil }, auditUpdate)
		if err != nil || again.Version != 3 {
			t.Errorf("second Update: Version %v, err %v; want 3", again, err)
		}
	}},
	{"update/writes-every-mutable-field", func(t *testing.T, f *fixture) {
		created := f.create(f.newKey())
		newHash, prevHash := randomHash(t), randomHash(t)
		_, after, err := f.s.Update(f.ctx, created.ID, func(k *keys.Key) error {
			k.Name = "new name"
			k.Description = "new description"
			k.Environment = "test"
			k.State = keys.StateDisabled
			k.Hash = newHash
			k.Start = "kw_test_Zz9Zz9"
			k.Last4 = "wxyz"
			k.Scopes = []string{"b", "a"}
			k.Metadata = map[string]string{"owner": "ops"}
			k.ExpireTime = time.Date(2040, 1, 2, 3, 4, 5, 6000, time.UTC)
			k.AllowedCIDRs = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/32")}
			k.RateLimit = keys.RateLimit{Limit: 100, Period: time.Minute, Burst: 20}
			k.Quota = keys.Quota{Limit: 1000, Refill: keys.RefillMonthly}
			k.PrevHash, k.PrevStart, k.PrevLast4 = prevHash, created.Start, created.Last4
			k.PrevExpire = time.Date(2030, 1, 3, 3, 4, 5, 8000, time.UTC)
			k.Sealed = []byte("sealed new secret")
			return nil
		}, auditUpdate)
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
		want := stored(created)
		want.AllowedCIDRs = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/32")}
		want.RateLimit = keys.RateLimit{Limit: 100, Period: time.Minute, Burst: 20}
		want.Quota = keys.Quota{Limit: 1000, Refill: keys.RefillMonthly}
		want.PrevHash, want.PrevStart, want.PrevLast4 = prevHash, created.Start, created.Last4
		want.PrevExpire = time.Date(2030, 1, 3, 3, 4, 5, 8000, time.UTC)
		want.Name, want.Description, want.Environment, want.State = "new name", "new description", "test", keys.StateDisabled
		want.Hash, want.Start, want.Last4 = newHash, "kw_test_Zz9Zz9", "wxyz"
		want.Scopes, want.Metadata = []string{"b", "a"}, map[string]string{"owner": "ops"}
		want.ExpireTime = time.Date(2040, 1, 2, 3, 4, 5, 6000, time.UTC)
		want.Sealed = []byte("sealed new secret")
		want.Version, want.UpdateTime = 2, after.UpdateTime
		f.wantEqual("after", want, after)
		f.wantEqual("Get", want, f.get(created.ID))
		byHash, err := f.s.GetByHash(f.ctx, newHash)
		if err != nil || byHash.ID != created.ID {
			t.Errorf("GetByHash(new hash) = %v, %v; want %s", byHash, err, created.ID)
		}
		byPrev, err := f.s.GetByHash(f.ctx, prevHash)
		if err != nil {
			t.Fatalf("GetByHash(prev hash): %v", err)
		}
		f.wantEqual("GetByHash(prev hash)", want, byPrev)
		f.wantNotFoundByHash(created.Hash)
	}},
	{"update/can-clear-times-and-metadata", func(t *testing.T, f *fixture) {
		k := f.newKey()
		k.ExpireTime, k.Sealed = time.Now().Add(time.Hour), []byte("sealed")
		created := f.create(k)
		_, _, err := f.s.Update(f.ctx, created.ID, func(k *keys.Key) error {
			k.ExpireTime, k.Metadata, k.Scopes, k.Sealed = time.Time{}, nil, nil, nil
			return nil
		}, auditUpdate)
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
		got := f.get(created.ID)
		if !got.ExpireTime.IsZero() || len(got.Metadata) != 0 || len(got.Scopes) != 0 || got.Sealed != nil {
			t.Errorf("after clearing: %+v", got)
		}
	}},
	{"update/fn-error-writes-nothing", func(t *testing.T, f *fixture) {
		created := f.create(f.newKey())
		errVeto := errors.New("veto")
		_, _, err := f.s.Update(f.ctx, created.ID, func(k *keys.Key) error {
			k.Name = "should not stick"
			k.Hash = randomHash(t)
			return fmt.Errorf("checking etag: %w", errVeto)
		}, auditUpdate)
		wantIs(t, err, errVeto)
		f.wantEqual("Get after vetoed update", created, f.get(created.ID))
	}},
	{"update/fn-edits-a-copy", func(t *testing.T, f *fixture) {
		k := f.newKey()
		k.Metadata = map[string]string{"a": "1"}
		k.Scopes = []string{"read"}
		k.AllowedCIDRs = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
		k.PrevHash = randomHash(t)
		created := f.create(k)
		before, _, err := f.s.Update(f.ctx, created.ID, func(k *keys.Key) error {
			k.Name = "changed"
			k.Metadata["a"] = "2"
			k.Scopes[0] = "write"
			k.AllowedCIDRs[0] = netip.MustParsePrefix("0.0.0.0/0")
			k.PrevHash[0] ^= 0xff
			return nil
		}, auditUpdate)
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
		f.wantEqual("before", created, before)
	}},
	{"update/not-found", func(t *testing.T, f *fixture) {
		called := false
		_, _, err := f.s.Update(f.ctx, "key_missing", func(*keys.Key) error { called = true; return nil }, auditUpdate)
		wantIs(t, err, keys.ErrNotFound)
		if called {
			t.Error("fn was called for a missing key")
		}
	}},
	{"update/duplicate-hash-writes-nothing", func(t *testing.T, f *fixture) {
		a := f.create(f.newKey())
		b := f.create(f.newKey())
		_, _, err := f.s.Update(f.ctx, b.ID, func(k *keys.Key) error {
			k.Name = "should not stick"
			k.Hash = bytes.Clone(a.Hash)
			return nil
		}, auditUpdate)
		wantIs(t, err, keys.ErrAlreadyExists)
		wantNoSecret(t, err, a.Hash)
		f.wantEqual("Get after refused update", b, f.get(b.ID))
	}},
	{"update/ignores-changes-to-store-fields", func(t *testing.T, f *fixture) {
		created := f.create(f.newKey())
		used := time.Date(2031, 1, 2, 3, 4, 5, 6000, time.UTC)
		f.recordUsage(nil, map[string]time.Time{created.ID: used})
		_, after, err := f.s.Update(f.ctx, created.ID, func(k *keys.Key) error {
			k.ID = "key_other"
			k.Version = 100
			k.CreateTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
			k.UpdateTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
			k.QuotaUsage = keys.QuotaUsage{Period: "2000-01", Used: 7}
			k.LastUsed = time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC)
			return nil
		}, auditUpdate)
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
		got := f.get(created.ID)
		if after.QuotaUsage != (keys.QuotaUsage{}) || got.QuotaUsage != (keys.QuotaUsage{}) {
			t.Errorf("fn set QuotaUsage: after %+v, stored %+v; want both zero", after.QuotaUsage, got.QuotaUsage)
		}
		if !after.LastUsed.Equal(used) || !got.LastUsed.Equal(used) {
			t.Errorf("fn set LastUsed: after %v, stored %v; want both %v", after.LastUsed, got.LastUsed, used)
		}
		if after.ID != created.ID || got.Version != 2 || after.Version != 2 ||
			!got.CreateTime.Equal(created.CreateTime) || got.UpdateTime.Before(created.UpdateTime) {
			t.Errorf("after %+v, stored %+v; want id, version 2, create time kept", after, got)
		}
		f.wantNotFound("key_other")
	}},
	{"concurrent-updates-serialise", func(t *testing.T, f *fixture) {
		k := f.newKey()
		k.Metadata = map[string]string{"n": "0"}
		created := f.create(k)
		const n = 20
		versions := make(chan int64, n)
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				_, after, err := f.s.Update(f.ctx, created.ID, func(k *keys.Key) error {
					i, err := strconv.Atoi(k.Metadata["n"])
					if err != nil {
						return err
					}
					k.Metadata["n"] = strconv.Itoa(i + 1)
					return nil
				}, auditUpdate)
				if err != nil {
					t.Errorf("Update: %v", err)
					return
				}
				versions <- after.Version
			})
		}
		wg.Wait()
		close(versions)
		seen := map[int64]bool{}
		for v := range versions {
			if seen[v] {
				t.Errorf("two updates both wrote version %d", v)
			}
			seen[v] = true
		}
		got := f.get(created.ID)
		if got.Version != 1+n || got.Metadata["n"] != strconv.Itoa(n) {
			t.Errorf("after %d updates: Version %d, n %q; want %d, %d", n, got.Version, got.Metadata["n"], 1+n, n)
		}
	}},

	// Delete.
	{"delete/then-get-not-found", func(t *testing.T, f *fixture) {
		created := f.create(f.newKey())
		other := f.create(f.newKey())
		deleted, err := f.s.Delete(f.ctx, created.ID, nil, auditDelete)
		if err != nil {
			t.Fatalf("Delete: %v", err)
		}
		f.wantEqual("deleted", created, deleted)
		f.wantNotFound(created.ID)
		f.wantNotFoundByHash(created.Hash)
		_, err = f.s.Delete(f.ctx, created.ID, nil, auditDelete)
		wantIs(t, err, keys.ErrNotFound)
		f.wantEqual("other key", other, f.get(other.ID))
	}},
	{"delete/fn-error-keeps-key", func(t *testing.T, f *fixture) {
		created := f.create(f.newKey())
		errVeto := errors.New("veto")
		_, err := f.s.Delete(f.ctx, created.ID, func(*keys.Key) error { return errVeto }, auditDelete)
		wantIs(t, err, errVeto)
		f.wantEqual("Get after vetoed delete", created, f.get(created.ID))
	}},
	{"delete/fn-sees-current-row", func(t *testing.T, f *fixture) {
		created := f.create(f.newKey())
		_, updated, err := f.s.Update(f.ctx, created.ID, func(k *keys.Key) error { k.Name = "v2"; return nil }, auditUpdate)
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
		var seen *keys.Key
		if _, err := f.s.Delete(f.ctx, created.ID, func(k *keys.Key) error { seen = k; return nil }, auditDelete); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		f.wantEqual("fn's argument", updated, seen)
	}},
	{"delete/not-found", func(t *testing.T, f *fixture) {
		_, err := f.s.Delete(f.ctx, "key_missing", func(*keys.Key) error {
			t.Error("fn was called for a missing key")
			return nil
		}, auditDelete)
		wantIs(t, err, keys.ErrNotFound)
	}},
	{"delete/frees-hash-and-request-id", func(t *testing.T, f *fixture) {
		first, err := f.s.Create(f.ctx, f.newKey(), "req-1", auditCreate)
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		if _, err := f.s.Delete(f.ctx, first.ID, nil, auditDelete); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		again := f.newKey()
		again.Hash = bytes.Clone(first.Hash)
		if _, err := f.s.Create(f.ctx, again, "req-1", auditCreate); err != nil {
			t.Fatalf("Create after delete with the same hash and request_id: %v", err)
		}
	}},

	// List.
	{"list/all-in-id-order", func(t *testing.T, f *fixture) {
		var ids []string
		for _, id := range []string{"key_c", "key_a", "key_e", "key_b", "key_d"} {
			k := f.newKey()
			k.ID = id
			f.create(k)
			ids = append(ids, id)
		}
		slices.Sort(ids)
		f.wantIDs(f.list(store.ListQuery{Limit: 100}), ids...)
	}},
	{"list/ids-order-bytewise", func(t *testing.T, f *fixture) {
		// A collation-aware order would put "key_B" and "key_b" together
		// and ignore the underscore; pages need Go's order.
		ids := []string{"key_b", "key_B", "key-c", "keyA", "key_a_1", "key_a-2"}
		for _, id := range ids {
			k := f.newKey()
			k.ID = id
			f.create(k)
		}
		slices.Sort(ids)
		f.wantIDs(f.list(store.ListQuery{Limit: 100}), ids...)
		f.wantIDs(f.list(store.ListQuery{AfterID: ids[2], Limit: 100}), ids[3:]...)
	}},
	{"list/limit-and-after-id", func(t *testing.T, f *fixture) {
		var ids []string
		for range 5 {
			ids = append(ids, f.create(f.newKey()).ID)
		}
		f.wantIDs(f.list(store.ListQuery{Limit: 2}), ids[:2]...)
		f.wantIDs(f.list(store.ListQuery{AfterID: ids[1], Limit: 2}), ids[2:4]...)
		f.wantIDs(f.list(store.ListQuery{AfterID: ids[3], Limit: 2}), ids[4])
		f.wantIDs(f.list(store.ListQuery{AfterID: ids[4], Limit: 2}))
	}},
	{"list/limit-below-one-is-invalid", func(t *testing.T, f *fixture) {
		f.create(f.newKey())
		for _, limit := range []int{0, -1} {
			_, err := f.s.List(f.ctx, store.ListQuery{Limit: limit})
			var invalid *keys.InvalidArgumentError
			if !errors.As(err, &invalid) {
				t.Errorf("List(Limit: %d): err = %v, want an InvalidArgumentError", limit, err)
			}
		}
	}},
	{"list/pages-stable-while-inserting-and-deleting", func(t *testing.T, f *fixture) {
		var ids []string
		for range 10 {
			ids = append(ids, f.create(f.newKey()).ID)
		}
		var got []string
		page := f.list(store.ListQuery{Limit: 3})
		for _, k := range page {
			got = append(got, k.ID)
		}
		// Between pages: delete one key already seen and one not yet
		// seen, add one sorting before the cursor and one after the rest.
		cursor := got[len(got)-1]
		f.delete(ids[1])
		f.delete(ids[5])
		early := f.newKey()
		early.ID = ids[0] + "a" // sorts between ids[0] and ids[1], before the cursor
		f.create(early)
		late := f.create(f.newKey())
		for {
			page := f.list(store.ListQuery{AfterID: cursor, Limit: 3})
			for _, k := range page {
				got = append(got, k.ID)
			}
			if len(page) < 3 {
				break
			}
			cursor = page[len(page)-1].ID
		}
		want := []string{ids[0], ids[1], ids[2], ids[3], ids[4], ids[6], ids[7], ids[8], ids[9], late.ID}
		if !slices.Equal(got, want) {
			t.Errorf("paged ids = %q, want %q", got, want)
		}
	}},
	{"list/name-case-insensitive", func(t *testing.T, f *fixture) {
		prod := f.createNamed("Production Backend")
		f.createNamed("staging")
		apfel := f.createNamed("ÄPFEL Service")
		greek := f.createNamed("Σοφία")
		f.wantIDs(f.list(store.ListQuery{NameContains: "PRODUCTION", Limit: 10}), prod.ID)
		f.wantIDs(f.list(store.ListQuery{NameContains: "backend", Limit: 10}), prod.ID)
		f.wantIDs(f.list(store.ListQuery{NameContains: "äpfel", Limit: 10}), apfel.ID)
		f.wantIDs(f.list(store.ListQuery{NameContains: "ΣΟΦ", Limit: 10}), greek.ID)
		f.wantIDs(f.list(store.ListQuery{NameContains: "nothing like it", Limit: 10}))
	}},
	{"list/like-wildcards-escaped", func(t *testing.T, f *fixture) {
		percent := f.createNamed("100% sure")
		f.createNamed("1000 sure")
		underscore := f.createNamed("snake_case")
		f.createNamed("snakeXcase")
		backslash := f.createNamed(`back\slash`)
		f.createNamed("backslash")
		star := f.createNamed("star*")
		f.createNamed("starry")
		bracket := f.createNamed("[ab]c")
		f.createNamed("ac")
		for query, want := range map[string]string{
			"0%": percent.ID, "%": percent.ID, "e_c": underscore.ID, "_": underscore.ID,
			`k\s`: backslash.ID, `\`: backslash.ID, "r*": star.ID, "[ab]": bracket.ID,
		} {
			f.wantIDs(f.list(store.ListQuery{NameContains: query, Limit: 20}), want)
		}
	}},
	{"list/by-hash", func(t *testing.T, f *fixture) {
		f.create(f.newKey())
		b := f.create(f.newKey())
		f.create(f.newKey())
		f.wantIDs(f.list(store.ListQuery{Hash: b.Hash, Limit: 10}), b.ID)
		f.wantIDs(f.list(store.ListQuery{Hash: randomHash(t), Limit: 10}))
	}},
	{"list/by-start-prefix", func(t *testing.T, f *fixture) {
		c123 := f.createStart("kw_live_AbC123")
		d999 := f.createStart("kw_live_AbD999")
		f.createStart("kw_test_AbC123")
		f.wantIDs(f.list(store.ListQuery{StartPrefix: "kw_live_Ab", Limit: 10}), c123.ID, d999.ID)
		f.wantIDs(f.list(store.ListQuery{StartPrefix: "kw_live_AbC", Limit: 10}), c123.ID)
		f.wantIDs(f.list(store.ListQuery{StartPrefix: "kw_live_X", Limit: 10}))
	}},
	{"list/start-prefix-case-sensitive", func(t *testing.T, f *fixture) {
		lower := f.createStart("kw_live_abc111")
		f.createStart("kw_live_ABC111")
		f.wantIDs(f.list(store.ListQuery{StartPrefix: "kw_live_abc", Limit: 10}), lower.ID)
	}},
	{"list/start-prefix-wildcards-escaped", func(t *testing.T, f *fixture) {
		underscore := f.createStart("kw_live_AAA")
		f.createStart("kwXliveXAAA")
		star := f.createStart("kw*")
		question := f.createStart("kw?x")
		bracket := f.createStart("k[w]")
		percent := f.createStart("k%w")
		for prefix, want := range map[string]string{
			"kw_": underscore.ID, "kw*": star.ID, "kw?": question.ID, "k[": bracket.ID, "k%": percent.ID,
		} {
			f.wantIDs(f.list(store.ListQuery{StartPrefix: prefix, Limit: 20}), want)
		}
	}},
	{"list/by-longer-typed-prefix", func(t *testing.T, f *fixture) {
		k := f.createStart("kw_live_AbC123")
		f.createStart("kw_live_ZZZ999")
		f.createStart("") // an empty start is a prefix of everything, but must not match
		f.createStart("kw_live_AbC1234567")
		typed := "kw_live_AbC123" + "xYz0987654321"
		f.wantIDs(f.list(store.ListQuery{StartPrefix: typed, Limit: 10}), k.ID)
	}},
	{"list/filters-are-ored", func(t *testing.T, f *fixture) {
		byName := f.createNamed("billing")
		byHash := f.create(f.newKey())
		byStart := f.createStart("kw_live_Pre123")
		f.createNamed("unrelated")
		got := f.list(store.ListQuery{NameContains: "BILL", Hash: byHash.Hash, StartPrefix: "kw_live_Pre", Limit: 10})
		f.wantIDs(got, byName.ID, byHash.ID, byStart.ID)
	}},
	{"list/filter-with-after-id", func(t *testing.T, f *fixture) {
		a := f.createNamed("match one")
		f.createNamed("other")
		c := f.createNamed("match two")
		f.wantIDs(f.list(store.ListQuery{NameContains: "match", AfterID: a.ID, Limit: 10}), c.ID)
	}},

	// Policies and the previous secret of a rotation.
	{"policy/round-trip", func(t *testing.T, f *fixture) {
		india := time.FixedZone("IST", 5*3600+1800)
		k := f.newKey()
		k.AllowedCIDRs = []netip.Prefix{
			netip.MustParsePrefix("10.0.0.0/8"),
			netip.MustParsePrefix("2001:db8:1::/48"),
			netip.MustParsePrefix("192.0.2.7/32"),
			netip.MustParsePrefix("::ffff:198.51.100.0/120"),
		}
		k.RateLimit = keys.RateLimit{Limit: 50, Period: 1500 * time.Millisecond, Burst: 10}
		k.Quota = keys.Quota{Limit: 10000, Refill: keys.RefillDaily}
		k.PrevHash, k.PrevStart, k.PrevLast4 = randomHash(t), "kw_test_Prev12", "pq12"
		k.PrevExpire = time.Date(2031, 2, 3, 4, 5, 6, 123456789, india)
		got, err := f.s.Create(f.ctx, k, "", auditCreate)
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		want := stored(k)
		want.Version, want.CreateTime, want.UpdateTime = 1, got.CreateTime, got.UpdateTime
		f.wantEqual("Create", want, got)
		f.wantEqual("Get", want, f.get(k.ID))
		for name, h := range map[string][]byte{"hash": k.Hash, "prev hash": k.PrevHash} {
			byHash, err := f.s.GetByHash(f.ctx, h)
			if err != nil {
				t.Fatalf("GetByHash(%s): %v", name, err)
			}
			f.wantEqual("GetByHash("+name+")", want, byHash)
			listed := f.list(store.ListQuery{Hash: h, Limit: 10})
			f.wantIDs(listed, k.ID)
			if len(listed) == 1 {
				f.wantEqual("List(Hash: "+name+")", want, listed[0])
			}
		}
		all := f.list(store.ListQuery{Limit: 10})
		f.wantIDs(all, k.ID)
		if len(all) == 1 {
			f.wantEqual("List", want, all[0])
		}
		// Only what was set is kept: a key with a quota alone has no
		// rate limit or allow-list.
		only := f.newKey()
		only.Quota = keys.Quota{Limit: 3, Refill: keys.RefillNever}
		f.wantEqual("Get (quota only)", f.create(only), f.get(only.ID))
	}},
	{"policy/empty-slices-read-back-nil", func(t *testing.T, f *fixture) {
		// Two keys with an empty (not nil) previous hash: neither is a
		// previous secret, so they do not collide either.
		for range 2 {
			k := f.newKey()
			k.AllowedCIDRs, k.PrevHash = []netip.Prefix{}, []byte{}
			created := f.create(k)
			for name, got := range map[string]*keys.Key{"Create": created, "Get": f.get(k.ID)} {
				if got.AllowedCIDRs != nil || got.PrevHash != nil {
					t.Errorf("%s: AllowedCIDRs %#v, PrevHash %d bytes non-nil; want both nil", name, got.AllowedCIDRs, len(got.PrevHash))
				}
			}
		}
	}},
	{"policy/update-can-clear", func(t *testing.T, f *fixture) {
		k := f.newKey()
		k.AllowedCIDRs = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
		k.RateLimit = keys.RateLimit{Limit: 1, Period: time.Second, Burst: 1}
		k.Quota = keys.Quota{Limit: 5, Refill: keys.RefillMonthly}
		k.PrevHash, k.PrevStart, k.PrevLast4, k.PrevExpire = randomHash(t), "kw_test_Old", "old4", time.Now().Add(time.Hour)
		created := f.create(k)
		_, after, err := f.s.Update(f.ctx, created.ID, func(k *keys.Key) error {
			k.AllowedCIDRs, k.RateLimit, k.Quota = nil, keys.RateLimit{}, keys.Quota{}
			k.ClearPrevious()
			return nil
		}, auditUpdate)
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
		want := stored(created)
		want.AllowedCIDRs, want.RateLimit, want.Quota = nil, keys.RateLimit{}, keys.Quota{}
		want.ClearPrevious()
		want.Version, want.UpdateTime = 2, after.UpdateTime
		f.wantEqual("after", want, after)
		f.wantEqual("Get", want, f.get(created.ID))
		f.wantNotFoundByHash(k.PrevHash)
		f.wantIDs(f.list(store.ListQuery{Hash: k.PrevHash, Limit: 10}))
	}},
	{"policy/rotation-moves-hash-to-prev", func(t *testing.T, f *fixture) {
		created := f.create(f.newKey())
		newHash := randomHash(t)
		_, _, err := f.s.Update(f.ctx, created.ID, func(k *keys.Key) error {
			k.PrevHash, k.PrevStart, k.PrevLast4 = k.Hash, k.Start, k.Last4
			k.PrevExpire = time.Now().Add(time.Hour)
			k.Hash, k.Start, k.Last4 = newHash, "kw_test_New123", "new4"
			return nil
		}, auditUpdate)
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
		// Both secrets find the key; the caller tells them apart by Hash.
		for name, h := range map[string][]byte{"new": newHash, "old": created.Hash} {
			got, err := f.s.GetByHash(f.ctx, h)
			if err != nil {
				t.Fatalf("GetByHash(%s secret): %v", name, err)
			}
			if got.ID != created.ID || !bytes.Equal(got.Hash, newHash) || !bytes.Equal(got.PrevHash, created.Hash) {
				t.Errorf("GetByHash(%s secret) = key %s with the wrong hashes", name, got.ID)
			}
		}
		// Ending the grace period forgets the old secret.
		if _, _, err := f.s.Update(f.ctx, created.ID, func(k *keys.Key) error { k.ClearPrevious(); return nil }, auditUpdate); err != nil {
			t.Fatalf("Update: %v", err)
		}
		f.wantNotFoundByHash(created.Hash)
		if got, err := f.s.GetByHash(f.ctx, newHash); err != nil || got.ID != created.ID {
			t.Errorf("GetByHash(new secret) after clearing = %v, %v", got, err)
		}
		// The old hash is free for another key's previous secret again.
		other := f.newKey()
		other.PrevHash = bytes.Clone(created.Hash)
		f.create(other)
	}},
	{"policy/duplicate-prev-hash", func(t *testing.T, f *fixture) {
		first := f.newKey()
		first.PrevHash = randomHash(t)
		first = f.create(first)
		dup := f.newKey()
		dup.PrevHash = bytes.Clone(first.PrevHash)
		_, err := f.s.Create(f.ctx, dup, "", auditCreate)
		wantIs(t, err, keys.ErrAlreadyExists)
		wantNoSecret(t, err, dup.PrevHash)
		f.wantNotFound(dup.ID)

		other := f.create(f.newKey())
		_, _, err = f.s.Update(f.ctx, other.ID, func(k *keys.Key) error {
			k.Name = "should not stick"
			k.PrevHash = bytes.Clone(first.PrevHash)
			return nil
		}, auditUpdate)
		wantIs(t, err, keys.ErrAlreadyExists)
		wantNoSecret(t, err, first.PrevHash)
		f.wantEqual("Get after refused update", other, f.get(other.ID))
		got, err := f.s.GetByHash(f.ctx, first.PrevHash)
		if err != nil || got.ID != first.ID {
			t.Errorf("GetByHash(prev hash) = %v, %v; want %s", got, err, first.ID)
		}
	}},
	{"policy/get-by-hash-prefers-current-hash", func(t *testing.T, f *fixture) {
		// Hashes and previous hashes are unique each; a value that is one
		// key's hash and another's previous hash finds the former.
		current := f.create(f.newKey())
		prev := f.newKey()
		prev.PrevHash = bytes.Clone(current.Hash)
		f.create(prev)
		got, err := f.s.GetByHash(f.ctx, current.Hash)
		if err != nil || got.ID != current.ID {
			t.Errorf("GetByHash = %v, %v; want %s", got, err, current.ID)
		}
		f.wantIDs(f.list(store.ListQuery{Hash: current.Hash, Limit: 10}), current.ID, prev.ID)
	}},

	// ConsumeQuota.
	{"consume-quota/counts-down-then-exceeded", func(t *testing.T, f *fixture) {
		q := keys.Quota{Limit: 3, Refill: keys.RefillDaily}
		k := f.createQuota(q)
		for want := int64(2); want >= 0; want-- {
			if got := f.consume(k.ID, q, day); got != want {
				t.Errorf("remaining = %d, want %d", got, want)
			}
		}
		_, err := f.s.ConsumeQuota(f.ctx, k.ID, q, day)
		wantIs(t, err, keys.ErrQuotaExceeded)
		got := f.get(k.ID)
		if got.QuotaUsage != (keys.QuotaUsage{Period: "2031-03-31", Used: 3}) {
			t.Errorf("QuotaUsage = %+v, want 3 used in 2031-03-31", got.QuotaUsage)
		}
		if got.Version != k.Version {
			t.Errorf("Version = %d after consuming, want %d: usage is not content", got.Version, k.Version)
		}
	}},
	{"consume-quota/exact-under-concurrency", func(t *testing.T, f *fixture) {
		const n, limit = 50, 20
		q := keys.Quota{Limit: limit, Refill: keys.RefillNever}
		k := f.createQuota(q)
		var ok, exceeded atomic.Int64
		remaining := make(chan int64, n)
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				r, err := f.s.ConsumeQuota(f.ctx, k.ID, q, day)
				switch {
				case err == nil:
					ok.Add(1)
					remaining <- r
				case errors.Is(err, keys.ErrQuotaExceeded):
					exceeded.Add(1)
				default:
					t.Errorf("ConsumeQuota: %v", err)
				}
			})
		}
		wg.Wait()
		close(remaining)
		if ok.Load() != limit || exceeded.Load() != n-limit {
			t.Errorf("%d succeeded, %d exceeded; want %d and %d", ok.Load(), exceeded.Load(), limit, n-limit)
		}
		seen := map[int64]bool{}
		for r := range remaining {
			if r < 0 || r >= limit || seen[r] {
				t.Errorf("remaining %d returned twice or out of range", r)
			}
			seen[r] = true
		}
		if got := f.get(k.ID).QuotaUsage; got != (keys.QuotaUsage{Period: "", Used: limit}) {
			t.Errorf("QuotaUsage = %+v, want %d used", got, limit)
		}
	}},
	{"consume-quota/period-rollover", func(t *testing.T, f *fixture) {
		for _, c := range []struct {
			refill     keys.Refill
			next       time.Time
			nextPeriod string
		}{
			{keys.RefillDaily, day.Add(time.Hour), "2031-04-01"}, // midnight exactly
			{keys.RefillMonthly, day.AddDate(0, 0, 1), "2031-04"},
		} {
			q := keys.Quota{Limit: 2, Refill: c.refill}
			k := f.createQuota(q)
			f.consume(k.ID, q, day)
			f.consume(k.ID, q, day)
			_, err := f.s.ConsumeQuota(f.ctx, k.ID, q, day)
			wantIs(t, err, keys.ErrQuotaExceeded)
			if got := f.consume(k.ID, q, c.next); got != 1 {
				t.Errorf("refill %d: remaining in the next period = %d, want 1", c.refill, got)
			}
			if got := f.get(k.ID).QuotaUsage; got != (keys.QuotaUsage{Period: c.nextPeriod, Used: 1}) {
				t.Errorf("refill %d: QuotaUsage = %+v, want 1 used in %s", c.refill, got, c.nextPeriod)
			}
		}
	}},
	{"consume-quota/never-refills", func(t *testing.T, f *fixture) {
		q := keys.Quota{Limit: 2, Refill: keys.RefillNever}
		k := f.createQuota(q)
		f.consume(k.ID, q, day)
		f.consume(k.ID, q, day.AddDate(0, 1, 0))
		_, err := f.s.ConsumeQuota(f.ctx, k.ID, q, day.AddDate(2, 0, 0))
		wantIs(t, err, keys.ErrQuotaExceeded)
	}},
	{"consume-quota/usage-on-every-read", func(t *testing.T, f *fixture) {
		q := keys.Quota{Limit: 10, Refill: keys.RefillMonthly}
		k := f.createQuota(q)
		f.consume(k.ID, q, day)
		f.consume(k.ID, q, day)
		want := keys.QuotaUsage{Period: "2031-03", Used: 2}
		check := func(what string, got *keys.Key) {
			t.Helper()
			if got.QuotaUsage != want {
				t.Errorf("%s: QuotaUsage = %+v, want %+v", what, got.QuotaUsage, want)
			}
		}
		check("Get", f.get(k.ID))
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
		check("Update's after (quota unchanged)", after)
		deleted, err := f.s.Delete(f.ctx, k.ID, func(k *keys.Key) error { check("Delete's fn", k); return nil }, auditDelete)
		if err != nil {
			t.Fatalf("Delete: %v", err)
		}
		check("Delete", deleted)
	}},
	{"consume-quota/quota-change-resets-count", func(t *testing.T, f *fixture) {
		q := keys.Quota{Limit: 5, Refill: keys.RefillDaily}
		k := f.createQuota(q)
		f.consume(k.ID, q, day)
		f.consume(k.ID, q, day)
		raised := keys.Quota{Limit: 10, Refill: keys.RefillDaily}
		before, after, err := f.s.Update(f.ctx, k.ID, func(k *keys.Key) error { k.Quota = raised; return nil }, auditUpdate)
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
		if before.QuotaUsage.Used != 2 || after.QuotaUsage != (keys.QuotaUsage{}) {
			t.Errorf("QuotaUsage before %+v, after %+v; want 2 used, then zero", before.QuotaUsage, after.QuotaUsage)
		}
		f.wantEqual("Get", after, f.get(k.ID))
		if got := f.consume(k.ID, raised, day); got != 9 {
			t.Errorf("remaining after the change = %d, want 9", got)
		}
	}},
	{"consume-quota/missing-key-not-found", func(t *testing.T, f *fixture) {
		q := keys.Quota{Limit: 5, Refill: keys.RefillDaily}
		_, err := f.s.ConsumeQuota(f.ctx, "key_missing", q, day)
		wantIs(t, err, keys.ErrNotFound)
		k := f.createQuota(q)
		f.consume(k.ID, q, day)
		f.delete(k.ID)
		_, err = f.s.ConsumeQuota(f.ctx, k.ID, q, day)
		wantIs(t, err, keys.ErrNotFound)
	}},
	{"consume-quota/delete-removes-count", func(t *testing.T, f *fixture) {
		q := keys.Quota{Limit: 1, Refill: keys.RefillNever}
		k := f.createQuota(q)
		f.consume(k.ID, q, day)
		f.delete(k.ID)
		// A key created again under the id starts with nothing used.
		again := f.newKey()
		again.ID, again.Quota = k.ID, q
		if got := f.create(again).QuotaUsage; got != (keys.QuotaUsage{}) {
			t.Errorf("Create: QuotaUsage = %+v, want zero", got)
		}
		if got := f.get(k.ID).QuotaUsage; got != (keys.QuotaUsage{}) {
			t.Errorf("Get: QuotaUsage = %+v, want zero", got)
		}
		if got := f.consume(k.ID, q, day); got != 0 {
			t.Errorf("remaining = %d, want 0", got)
		}
	}},
	{"consume-quota/unset-quota-is-invalid", func(t *testing.T, f *fixture) {
		k := f.create(f.newKey())
		for _, q := range []keys.Quota{{}, {Limit: -1}, {Limit: 5, Refill: keys.Refill(99)}} {
			_, err := f.s.ConsumeQuota(f.ctx, k.ID, q, day)
			var invalid *keys.InvalidArgumentError
			if !errors.As(err, &invalid) {
				t.Errorf("ConsumeQuota(%+v): err = %v, want an InvalidArgumentError", q, err)
			}
		}
		if got := f.get(k.ID).QuotaUsage; got != (keys.QuotaUsage{}) {
			t.Errorf("QuotaUsage = %+v after refused consumes, want zero", got)
		}
	}},
}

// fixture is one test's store and helpers bound to it.
type fixture struct {
	t    *testing.T
	s    store.Store
	exec Exec
	ctx  context.Context
	n    atomic.Int64
	// lastList describes the latest List call, for wantIDs' messages.
	lastList string
}

// newKey returns a valid, distinct key whose id sorts after every earlier one.
func (f *fixture) newKey() *keys.Key {
	n := f.n.Add(1)
	return &keys.Key{
		ID:          fmt.Sprintf("key_%08d", n),
		Name:        fmt.Sprintf("key %d", n),
		Environment: "test",
		State:       keys.StateActive,
		Hash:        randomHash(f.t),
		Start:       "kw_test_" + randomText(f.t, 6),
		Last4:       randomText(f.t, 4),
		Scopes:      []string{"keys:read"},
		Metadata:    map[string]string{"team": "core"},
	}
}

func (f *fixture) create(k *keys.Key) *keys.Key {
	f.t.Helper()
	got, err := f.s.Create(f.ctx, k, "", auditCreate)
	if err != nil {
		f.t.Fatalf("Create %s: %v", k.ID, err)
	}
	return got
}

// day is the time quota tests consume at: the last day of a month, so the
// next day starts a new day and a new month.
var day = time.Date(2031, 3, 31, 23, 0, 0, 0, time.UTC)

func (f *fixture) createQuota(q keys.Quota) *keys.Key {
	f.t.Helper()
	k := f.newKey()
	k.Quota = q
	return f.create(k)
}

// consume counts one use, which must be allowed, and returns the remaining.
func (f *fixture) consume(id string, q keys.Quota, now time.Time) int64 {
	f.t.Helper()
	remaining, err := f.s.ConsumeQuota(f.ctx, id, q, now)
	if err != nil {
		f.t.Fatalf("ConsumeQuota %s: %v", id, err)
	}
	return remaining
}

func (f *fixture) createNamed(name string) *keys.Key {
	f.t.Helper()
	k := f.newKey()
	k.Name = name
	return f.create(k)
}

func (f *fixture) createStart(start string) *keys.Key {
	f.t.Helper()
	k := f.newKey()
	k.Start = start
	return f.create(k)
}

func (f *fixture) get(id string) *keys.Key {
	f.t.Helper()
	k, err := f.s.Get(f.ctx, id)
	if err != nil {
		f.t.Fatalf("Get %s: %v", id, err)
	}
	return k
}

func (f *fixture) delete(id string) {
	f.t.Helper()
	if _, err := f.s.Delete(f.ctx, id, nil, auditDelete); err != nil {
		f.t.Fatalf("Delete %s: %v", id, err)
	}
}

func (f *fixture) list(q store.ListQuery) []*keys.Key {
	f.t.Helper()
	f.lastList = fmt.Sprintf("List(%+v)", q)
	ks, err := f.s.List(f.ctx, q)
	if err != nil {
		f.t.Fatalf("%s: %v", f.lastList, err)
	}
	return ks
}

func (f *fixture) wantNotFound(id string) {
	f.t.Helper()
	_, err := f.s.Get(f.ctx, id)
	if !errors.Is(err, keys.ErrNotFound) {
		f.t.Errorf("Get %s: err = %v, want not found", id, err)
	}
}

func (f *fixture) wantNotFoundByHash(hash []byte) {
	f.t.Helper()
	_, err := f.s.GetByHash(f.ctx, hash)
	if !errors.Is(err, keys.ErrNotFound) {
		f.t.Errorf("GetByHash: err = %v, want not found", err)
	}
}

// wantIDs fails unless ks are the keys with these ids, in this order. The
// failure names the List call, as several are checked in one test.
func (f *fixture) wantIDs(ks []*keys.Key, want ...string) {
	f.t.Helper()
	got := make([]string, 0, len(ks))
	for _, k := range ks {
		got = append(got, k.ID)
	}
	if !slices.Equal(got, want) {
		f.t.Errorf("%s: ids = %q, want %q", f.lastList, got, want)
	}
}

// wantEqual fails unless got is want field by field, in the normalised form
// store.Store promises: UTC microsecond times, non-nil Scopes and Metadata,
// nil (not empty) AllowedCIDRs and PrevHash.
func (f *fixture) wantEqual(what string, want, got *keys.Key) {
	f.t.Helper()
	if got == nil {
		f.t.Errorf("%s: nil key", what)
		return
	}
	var d []string
	add := func(field string, w, g any) { d = append(d, fmt.Sprintf("%s = %v, want %v", field, g, w)) }
	if got.ID != want.ID {
		add("ID", want.ID, got.ID)
	}
	if got.Name != want.Name {
		add("Name", want.Name, got.Name)
	}
	if got.Description != want.Description {
		add("Description", want.Description, got.Description)
	}
	if got.Environment != want.Environment {
		add("Environment", want.Environment, got.Environment)
	}
	if got.State != want.State {
		add("State", want.State, got.State)
	}
	if !bytes.Equal(got.Hash, want.Hash) {
		add("Hash", "the expected hash", "another") // never print hashes
	}
	if got.Start != want.Start {
		add("Start", want.Start, got.Start)
	}
	if got.Last4 != want.Last4 {
		add("Last4", want.Last4, got.Last4)
	}
	if got.Scopes == nil || !slices.Equal(got.Scopes, want.Scopes) {
		add("Scopes", fmt.Sprintf("%#v", want.Scopes), fmt.Sprintf("%#v", got.Scopes))
	}
	if got.Metadata == nil || !maps.Equal(got.Metadata, want.Metadata) {
		add("Metadata", fmt.Sprintf("%#v", want.Metadata), fmt.Sprintf("%#v", got.Metadata))
	}
	for _, c := range []struct {
		field     string
		want, got time.Time
	}{
		{"CreateTime", want.CreateTime, got.CreateTime},
		{"UpdateTime", want.UpdateTime, got.UpdateTime},
		{"ExpireTime", want.ExpireTime, got.ExpireTime},
		{"LastUsed", want.LastUsed, got.LastUsed},
	} {
		if !c.got.Equal(c.want) || c.got.Location() != time.UTC || c.got.Nanosecond()%1000 != 0 {
			add(c.field, c.want, c.got)
		}
	}
	if !slices.Equal(got.AllowedCIDRs, want.AllowedCIDRs) || (got.AllowedCIDRs != nil && len(got.AllowedCIDRs) == 0) {
		add("AllowedCIDRs", fmt.Sprintf("%#v", want.AllowedCIDRs), fmt.Sprintf("%#v", got.AllowedCIDRs))
	}
	if got.RateLimit != want.RateLimit {
		add("RateLimit", want.RateLimit, got.RateLimit)
	}
	if got.Quota != want.Quota {
		add("Quota", want.Quota, got.Quota)
	}
	if got.QuotaUsage != want.QuotaUsage {
		add("QuotaUsage", want.QuotaUsage, got.QuotaUsage)
	}
	if !bytes.Equal(got.PrevHash, want.PrevHash) {
		add("PrevHash", "the expected hash", "another") // never print hashes
	} else if got.PrevHash != nil && len(got.PrevHash) == 0 {
		add("PrevHash", "nil", "empty and non-nil")
	}
	if got.PrevStart != want.PrevStart {
		add("PrevStart", want.PrevStart, got.PrevStart)
	}
	if got.PrevLast4 != want.PrevLast4 {
		add("PrevLast4", want.PrevLast4, got.PrevLast4)
	}
	if !got.PrevExpire.Equal(want.PrevExpire) || got.PrevExpire.Location() != time.UTC || got.PrevExpire.Nanosecond()%1000 != 0 {
		add("PrevExpire", want.PrevExpire, got.PrevExpire)
	}
	if !bytes.Equal(got.Sealed, want.Sealed) {
		add("Sealed", fmt.Sprintf("%q", want.Sealed), fmt.Sprintf("%q", got.Sealed))
	} else if got.Sealed != nil && len(got.Sealed) == 0 {
		add("Sealed", "nil", "empty and non-nil")
	}
	if got.Version != want.Version {
		add("Version", want.Version, got.Version)
	}
	if len(d) > 0 {
		f.t.Errorf("%s %s:\n  %s", what, want.ID, strings.Join(d, "\n  "))
	}
}

// stored is k as a store returns it, but for the fields the store sets
// (LastUsed and QuotaUsage are zero, as for a key never used).
func stored(k *keys.Key) *keys.Key {
	c := k.Clone()
	c.LastUsed, c.QuotaUsage = time.Time{}, keys.QuotaUsage{}
	if c.Scopes == nil {
		c.Scopes = []string{}
	}
	if c.Metadata == nil {
		c.Metadata = map[string]string{}
	}
	micro := func(t time.Time) time.Time {
		if t.IsZero() {
			return t
		}
		return t.UTC().Truncate(time.Microsecond)
	}
	c.CreateTime, c.UpdateTime = micro(c.CreateTime), micro(c.UpdateTime)
	c.ExpireTime = micro(c.ExpireTime)
	c.PrevExpire = micro(c.PrevExpire)
	c.RateLimit.Period = c.RateLimit.Period.Truncate(time.Millisecond)
	return c
}

func wantIs(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("err = %v, want %v", err, target)
	}
}

// wantNoSecret fails if err's text carries hash, raw or in hex.
func wantNoSecret(t *testing.T, err error, hash []byte) {
	t.Helper()
	if err == nil {
		return
	}
	msg := err.Error()
	if strings.Contains(msg, string(hash)) || strings.Contains(strings.ToLower(msg), hex.EncodeToString(hash)) {
		t.Errorf("error text carries a key hash: %q", msg)
	}
}

func randomHash(t testing.TB) []byte {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func randomText(t testing.TB, n int) string {
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}
