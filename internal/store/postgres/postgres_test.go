package postgres_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/store/postgres"
	"github.com/keyward/keyward/internal/store/storetest"
	"github.com/keyward/keyward/internal/testenv"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) (store.Store, storetest.Exec) {
		dsn := testenv.Postgres(t)
		return open(t, dsn), func(ctx context.Context, query string, args ...any) error {
			return exec(ctx, dsn, query, args...)
		}
	})
}

// exec runs query on its own connection, behind the store's back. Its
// parameters are written ?, as storetest.Exec's are.
func exec(ctx context.Context, dsn, query string, args ...any) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	n := 0
	query = regexp.MustCompile(`\?`).ReplaceAllStringFunc(query, func(string) string {
		n++
		return "$" + strconv.Itoa(n)
	})
	_, err = conn.Exec(ctx, query, args...)
	return err
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
	if _, err := stores[0].Create(t.Context(), k, "", store.Audit{Action: audit.ActionCreate}); err != nil {
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

func TestAuditChainAcrossInstances(t *testing.T) {
	// Two stores on one database are two instances: their appends queue on
	// the chain's head row, so the chain neither forks nor has gaps.
	dsn := testenv.Postgres(t)
	stores := []*postgres.Store{open(t, dsn), open(t, dsn)}
	const workers, rounds = 6, 5
	var wg sync.WaitGroup
	for w := range workers {
		st := stores[w%len(stores)]
		wg.Go(func() {
			for r := range rounds {
				k := &keys.Key{ID: fmt.Sprintf("key_%d_%d", w, r), State: keys.StateActive, Hash: randomHash(t)}
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
	// A database at schema version 2 whose keys had last_used_time set
	// directly: the times move to api_key_last_used.
	dsn := testenv.Postgres(t)
	for _, name := range []string{"0001_init.sql", "0002_policies.sql"} {
		body, err := os.ReadFile(filepath.Join("migrations", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := exec(t.Context(), dsn, string(body)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	used := time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC)
	for _, q := range []string{
		`CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
		`INSERT INTO schema_migrations (version, name) VALUES (1, '0001_init.sql'), (2, '0002_policies.sql')`,
		`INSERT INTO api_keys (id, name, name_fold, description, environment, state, hash, start, last4, scopes, metadata,
			create_time, update_time, last_used_time, version)
			VALUES ('key_used', 'used', 'used', '', 'live', 1, '\x01', 'kw', 'abcd', '{}', '{}', now(), now(), '2030-01-02T03:04:05.000006Z', 1),
			('key_unused', 'unused', 'unused', '', 'live', 1, '\x02', 'kw', 'abcd', '{}', '{}', now(), now(), NULL, 1)`,
	} {
		if err := exec(t.Context(), dsn, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	s := open(t, dsn)
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

func randomHash(t *testing.T) []byte {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}
