package postgres_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/store/postgres"
	"github.com/keyward/keyward/internal/store/storetest"
	"github.com/keyward/keyward/internal/testenv"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, testenv.Postgres(t))
	})
}

func open(t *testing.T, dsn string) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(t.Context(), dsn)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConcurrentOpensMigrateOnce(t *testing.T) {
	dsn := testenv.Postgres(t)
	stores := make([]*postgres.Store, 4)
	errs := make([]error, len(stores))
	var wg sync.WaitGroup
	for i := range stores {
		wg.Go(func() { stores[i], errs[i] = postgres.Open(t.Context(), dsn) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open %d: %v", i, err)
		}
		defer stores[i].Close()
	}
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
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var rows, distinct int
	if err := conn.QueryRow(t.Context(),
		"SELECT count(*), count(DISTINCT version) FROM schema_migrations").Scan(&rows, &distinct); err != nil {
		t.Fatal(err)
	}
	if rows == 0 || rows != distinct {
		t.Errorf("schema_migrations has %d rows for %d versions", rows, distinct)
	}
}

func TestUnreachableServerIsUnavailable(t *testing.T) {
	// Nothing listens on port 1.
	_, err := postgres.Open(t.Context(), "postgres://postgres@127.0.0.1:1/keyward?sslmode=disable&connect_timeout=2")
	if !errors.Is(err, keys.ErrUnavailable) {
		t.Fatalf("Open on a closed port: err = %v, want unavailable", err)
	}
}

func TestLostConnectionsAreUnavailable(t *testing.T) {
	dsn := testenv.Postgres(t)
	s := open(t, dsn)

	// The server ends the store's session (as on failover or restart).
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(t.Context(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(t.Context(), "key_1"); !errors.Is(err, keys.ErrUnavailable) {
		t.Errorf("Get on a terminated connection: err = %v, want unavailable", err)
	}
	// The pool replaces the connection; the store recovers by itself.
	if _, err := s.Get(t.Context(), "key_1"); !errors.Is(err, keys.ErrNotFound) {
		t.Errorf("Get after reconnecting: err = %v, want not found", err)
	}

	// The caller giving up is not the store being down.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.Get(ctx, "key_1"); !errors.Is(err, context.Canceled) || errors.Is(err, keys.ErrUnavailable) {
		t.Errorf("Get with a cancelled context: err = %v, want only context.Canceled", err)
	}

	s.Close()
	if err := s.Ping(t.Context()); !errors.Is(err, keys.ErrUnavailable) {
		t.Errorf("Ping after Close: err = %v, want unavailable", err)
	}
}
