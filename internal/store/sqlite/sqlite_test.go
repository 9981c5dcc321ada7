package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/store/sqlite"
	"github.com/keyward/keyward/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) (store.Store, storetest.Exec) {
		path := filepath.Join(t.TempDir(), "keyward.db")
		s, err := sqlite.Open(t.Context(), path)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s, func(ctx context.Context, query string, args ...any) error { return exec(ctx, path, query, args...) }
	})
}

// exec runs query on its own connection, behind the store's back.
func exec(ctx context.Context, path, query string, args ...any) error {
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.ExecContext(ctx, query, args...)
	return err
}

func TestDataSurvivesReopen(t *testing.T) {
	// A directory that does not exist yet, with characters a file: URI
	// would otherwise misread.
	path := filepath.Join(t.TempDir(), "new dir?#%", "keyward.db")
	s, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	k := &keys.Key{ID: "key_1", Name: "kept", State: keys.StateActive, Hash: []byte("0123456789abcdef0123456789abcdef")}
	if _, err := s.Create(t.Context(), k, "req-1", store.Audit{Action: audit.ActionCreate}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s, err = sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	got, err := s.Get(t.Context(), "key_1")
	if err != nil || got.Name != "kept" || got.Version != 1 {
		t.Fatalf("Get after reopen = %+v, %v; want the key created before", got, err)
	}
	// The request id was kept too.
	k.ID, k.Hash = "key_2", []byte("another hash, also thirty-two b.")
	if _, err := s.Create(t.Context(), k, "req-1", store.Audit{Action: audit.ActionCreate}); !errors.Is(err, keys.ErrAlreadyExists) {
		t.Errorf("Create with a request id used before the reopen: err = %v, want already exists", err)
	}
}

func TestConcurrentOpensMigrateOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keyward.db")
	var wg sync.WaitGroup
	stores := make([]*sqlite.Store, 4)
	errs := make([]error, len(stores))
	for i := range stores {
		wg.Go(func() { stores[i], errs[i] = sqlite.Open(t.Context(), path) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open %d: %v", i, err)
		}
		defer stores[i].Close()
	}
	// Every store sees one schema: a key created through one is read
	// through another, and migrating again is a no-op.
	k := &keys.Key{ID: "key_1", State: keys.StateActive, Hash: []byte("0123456789abcdef0123456789abcdef")}
	if _, err := stores[0].Create(t.Context(), k, "", store.Audit{Action: audit.ActionCreate}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if err := stores[1].Migrate(t.Context()); err != nil {
		t.Fatalf("Migrate again: %v", err)
	}
	if _, err := stores[len(stores)-1].Get(t.Context(), "key_1"); err != nil {
		t.Fatalf("Get through another store: %v", err)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var rows, distinct int
	if err := db.QueryRow("SELECT count(*), count(DISTINCT version) FROM schema_migrations").Scan(&rows, &distinct); err != nil {
		t.Fatal(err)
	}
	if rows == 0 || rows != distinct {
		t.Errorf("schema_migrations has %d rows for %d versions", rows, distinct)
	}
}

func TestAuditChainAcrossStores(t *testing.T) {
	// Two stores on one file stand for two processes: their write
	// transactions exclude each other (BEGIN IMMEDIATE), so the chain
	// neither forks nor has gaps.
	path := filepath.Join(t.TempDir(), "keyward.db")
	var stores []*sqlite.Store
	for range 2 {
		s, err := sqlite.Open(t.Context(), path)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer s.Close()
		stores = append(stores, s)
	}
	const workers, rounds = 6, 5
	var wg sync.WaitGroup
	for w := range workers {
		st := stores[w%len(stores)]
		wg.Go(func() {
			for r := range rounds {
				k := &keys.Key{ID: fmt.Sprintf("key_%d_%d", w, r), State: keys.StateActive, Hash: []byte(fmt.Sprintf("hash %d %d", w, r))}
				if _, err := st.Create(t.Context(), k, "", store.Audit{Action: audit.ActionCreate}); err != nil {
					t.Errorf("Create: %v", err)
				}
				if err := st.AppendAudit(t.Context(), store.Audit{Action: audit.ActionReveal, KeyID: k.ID}); err != nil {
					t.Errorf("AppendAudit: %v", err)
				}
			}
		})
	}
	wg.Wait()
	var v audit.Verifier
	if err := stores[0].ScanAudit(t.Context(), v.Add); err != nil || v.Count() != workers*rounds*2 {
		t.Errorf("verified %d events, err %v; want %d", v.Count(), err, workers*rounds*2)
	}
}

func TestMigrationKeepsLastUsed(t *testing.T) {
	// A file at schema version 2 whose keys had last_used_time set
	// directly: the times move to api_key_last_used.
	path := filepath.Join(t.TempDir(), "keyward.db")
	for _, name := range []string{"0001_init.sql", "0002_policies.sql"} {
		body, err := os.ReadFile(filepath.Join("migrations", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := exec(t.Context(), path, string(body)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	used := time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC)
	for _, q := range []string{
		`CREATE TABLE schema_migrations (version INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT`,
		`INSERT INTO schema_migrations (version, name, applied_at) VALUES (1, '0001_init.sql', 0), (2, '0002_policies.sql', 0)`,
		`INSERT INTO api_keys (id, name, name_fold, description, environment, state, hash, start, last4, scopes, metadata,
			create_time, update_time, last_used_time, version)
			VALUES ('key_used', 'used', 'used', '', 'live', 1, X'01', 'kw', 'abcd', '[]', '{}', 0, 0, ` + fmt.Sprint(used.UnixMicro()) + `, 1),
			('key_unused', 'unused', 'unused', '', 'live', 1, X'02', 'kw', 'abcd', '[]', '{}', 0, 0, NULL, 1)`,
	} {
		if err := exec(t.Context(), path, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	s, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	for id, want := range map[string]time.Time{"key_used": used, "key_unused": {}} {
		k, err := s.Get(t.Context(), id)
		if err != nil {
			t.Fatalf("Get %s: %v", id, err)
		}
		if !k.LastUsed.Equal(want) || k.Sealed != nil {
			t.Errorf("Get %s: LastUsed %v, Sealed %x; want %v, nil", id, k.LastUsed, k.Sealed, want)
		}
	}
}
