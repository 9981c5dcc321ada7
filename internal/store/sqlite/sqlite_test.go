package sqlite_test

import (
	"database/sql"
	"errors"
	"path/filepath"
	"sync"
	"testing"

	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/store/sqlite"
	"github.com/keyward/keyward/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "keyward.db"))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	})
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
	if _, err := s.Create(t.Context(), k, "req-1"); err != nil {
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
	if _, err := s.Create(t.Context(), k, "req-1"); !errors.Is(err, keys.ErrAlreadyExists) {
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
	if _, err := stores[0].Create(t.Context(), k, ""); err != nil {
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
