// Package postgres is the Store for more than one Keyward instance: every
// instance shares one PostgreSQL database through a pgx connection pool.
//
// Writes read their row FOR UPDATE in the same transaction that writes it, so
// concurrent updates of one key queue up rather than lose each other's
// changes, at the default READ COMMITTED isolation and without retries.
// Each write then appends its audit event in that transaction, after locking
// the one row of audit_head, the chain's head (audit.go): appends from every
// instance queue on that lock, which is the last one a write takes, so it is
// held only for the append and the commit and no deadlock can involve it.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/store"
)

var _ store.Store = (*Store)(nil)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrationLock is the pg_advisory_xact_lock key held while migrating: the
// bytes of "keyward" (advisory locks are per database, so this only
// serialises Keyward instances sharing one).
const migrationLock int64 = 0x6b657977617264

// Store is a Store on one PostgreSQL database.
type Store struct {
	pool *pgxpool.Pool
	now  func() time.Time
}

// Open connects to the database dsn names (a URL or key=value string, as
// libpq accepts) and brings its schema up to date. An unreachable server is
// an error wrapping keys.ErrUnavailable.
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx redacts the password from parse errors.
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg) // connects lazily
	if err != nil {
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	s := &Store{pool: pool, now: time.Now}
	if err := s.Migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	return s, nil
}

// Ping reports whether the server answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping postgres: %w", translate(ctx, err))
	}
	return nil
}

// Close closes every connection; the Store must not be used afterwards.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// Migrate applies the embedded migrations not yet recorded in
// schema_migrations, in order, in one transaction that first takes an
// advisory lock: instances starting together apply each migration once, the
// others wait and then find nothing to do. DDL is transactional in
// PostgreSQL, so a failed migration leaves no trace. Versions recorded but
// unknown to this binary (a newer release ran) are left alone.
func (s *Store) Migrate(ctx context.Context) error {
	ms, err := store.Migrations(migrationFiles)
	if err != nil {
		return err
	}
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLock); err != nil {
			return translate(ctx, err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    integer PRIMARY KEY,
			name       text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now()
		)`); err != nil {
			return translate(ctx, err)
		}
		rows, err := tx.Query(ctx, "SELECT version FROM schema_migrations")
		if err != nil {
			return translate(ctx, err)
		}
		versions, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			return translate(ctx, err)
		}
		applied := map[int]bool{}
		for _, v := range versions {
			applied[int(v)] = true
		}
		for _, m := range ms {
			if applied[m.Version] {
				continue
			}
			// No arguments: pgx sends it with the simple protocol, which
			// allows several statements.
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return fmt.Errorf("migration %s: %w", m.Name, translate(ctx, err))
			}
			if _, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
				m.Version, m.Name); err != nil {
				return fmt.Errorf("record migration %s: %w", m.Name, translate(ctx, err))
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("migrate postgres schema: %w", err)
	}
	return nil
}

// inTx runs fn in a transaction, committing if fn returns nil and rolling back
// otherwise, so no caller can forget either. fn's error is returned as is;
// errors of BEGIN and COMMIT are translated.
func (s *Store) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return translate(ctx, err)
	}
	if err := fn(tx); err != nil {
		// Even if ctx is done the rollback should be sent, so the
		// connection goes back to the pool clean; pgx closes it otherwise.
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return translate(ctx, err)
	}
	return nil
}

// translate maps pgx errors onto the store's error contract, keeping the
// original wrapped for logs. A unique violation is keys.ErrAlreadyExists
// (named by its constraint: the server's detail would quote the values). The
// caller's own cancellation passes through. Anything else the server did not
// report — refused or broken connections, a closed or exhausted pool,
// timeouts — and the server's connection and resource errors are
// keys.ErrUnavailable, so clients know to retry.
func translate(ctx context.Context, err error) error {
	if err == nil || errors.Is(err, pgx.ErrNoRows) ||
		errors.Is(err, keys.ErrAlreadyExists) || errors.Is(err, keys.ErrUnavailable) { // translated already
		return err
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "23505": // unique_violation
			return fmt.Errorf("%w (constraint %s)", keys.ErrAlreadyExists, pe.ConstraintName)
		case strings.HasPrefix(pe.Code, "08"), // connection_exception
			strings.HasPrefix(pe.Code, "53"), // insufficient_resources
			pe.Code == "57P01",               // admin_shutdown
			pe.Code == "57P02",               // crash_shutdown
			pe.Code == "57P03":               // cannot_connect_now
			return fmt.Errorf("%w: %w", keys.ErrUnavailable, err)
		}
		return err
	}
	if ctx.Err() != nil {
		return err
	}
	return fmt.Errorf("%w: %w", keys.ErrUnavailable, err)
}
