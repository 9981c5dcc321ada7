// Package sqlite is the zero-setup Store: one local file, no server, pure Go
// (modernc.org/sqlite, so no cgo). It suits a single Keyward instance; several
// instances need the postgres package.
//
// SQLite allows one writer at a time. Writes take the lock when their
// transaction begins (_txlock=immediate), so two writers never both read and
// then fail to upgrade; writers of this process queue on a semaphore instead
// of spinning in SQLite's busy handler; a writer from another process that
// holds the lock past busy_timeout makes the transaction start again. Being
// exclusive, write transactions also extend the audit trail's hash chain
// (audit.go) without a lock of their own.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/store"
)

var _ store.Store = (*Store)(nil)

//go:embed migrations/*.sql
var migrationFiles embed.FS

const (
	// busyTimeout is how long SQLite itself waits for another connection's
	// lock before reporting SQLITE_BUSY.
	busyTimeout = 5 * time.Second
	// busyAttempts bounds how often a transaction is started again after
	// SQLITE_BUSY, i.e. after another process held the lock for busyTimeout.
	busyAttempts = 4
)

// Store is a Store on one SQLite file.
type Store struct {
	db *sql.DB
	// writer admits one write transaction of this process at a time; SQLite
	// would serialise them anyway, but by polling.
	writer chan struct{}
	now    func() time.Time
}

// Open opens (creating it and its directory if missing) the database file at
// path and brings its schema up to date.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("open sqlite store: empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	db, err := sql.Open("sqlite", dsn(abs))
	if err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	// Every new connection runs the DSN's pragmas; keeping idle connections
	// avoids paying that on every burst of reads.
	conns := max(4, runtime.GOMAXPROCS(0))
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)

	s := &Store{db: db, writer: make(chan struct{}, 1), now: time.Now}
	if err := s.Migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	return s, nil
}

// dsn builds a file: URI, escaping the path so that '?', '#' or '%' in a
// directory name cannot be read as URI syntax. journal_mode=WAL lets reads
// proceed during a write; synchronous stays at its default, FULL, so a
// committed revocation survives a power cut.
func dsn(abs string) string {
	p := filepath.ToSlash(abs)
	if !strings.HasPrefix(p, "/") { // C:/dir on Windows
		p = "/" + p
	}
	u := url.URL{Scheme: "file", Path: p}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout("+strconv.Itoa(int(busyTimeout.Milliseconds()))+")")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Set("_txlock", "immediate")
	return u.String() + "?" + q.Encode()
}

// Ping reports whether the database file can be read.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("ping sqlite: %w", translate(err))
	}
	return nil
}

// Close closes the database; the Store must not be used afterwards.
func (s *Store) Close() error {
	return s.db.Close()
}

// Migrate applies the embedded migrations not yet recorded in
// schema_migrations, each in order, all in one write transaction, so
// concurrent Opens of one file apply each migration once. Versions recorded
// but unknown to this binary (a newer release ran) are left alone.
func (s *Store) Migrate(ctx context.Context) error {
	ms, err := store.Migrations(migrationFiles)
	if err != nil {
		return err
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    INTEGER NOT NULL PRIMARY KEY,
			name       TEXT    NOT NULL,
			applied_at INTEGER NOT NULL
		) STRICT`); err != nil {
			return err
		}
		applied := map[int]bool{}
		rows, err := tx.QueryContext(ctx, "SELECT version FROM schema_migrations")
		if err != nil {
			return err
		}
		for rows.Next() {
			var v int
			if err := rows.Scan(&v); err != nil {
				rows.Close()
				return err
			}
			applied[v] = true
		}
		if err := rows.Close(); err != nil {
			return err
		}
		for _, m := range ms {
			if applied[m.Version] {
				continue
			}
			if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
				return fmt.Errorf("migration %s: %w", m.Name, err)
			}
			if _, err := tx.ExecContext(ctx,
				"INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
				m.Version, m.Name, s.now().UnixMicro()); err != nil {
				return fmt.Errorf("record migration %s: %w", m.Name, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("migrate sqlite schema: %w", translate(err))
	}
	return nil
}

// inTx runs fn in a write transaction, committing if fn returns nil and
// rolling back otherwise, so no caller can forget either. fn's error is
// returned as is; fn runs again, in a new transaction, if SQLite reports the
// database busy.
func (s *Store) inTx(ctx context.Context, fn func(*sql.Tx) error) error {
	select {
	case s.writer <- struct{}{}:
		defer func() { <-s.writer }()
	case <-ctx.Done():
		return ctx.Err()
	}
	for attempt := 1; ; attempt++ {
		err := s.tryTx(ctx, fn)
		if !isBusy(err) || attempt == busyAttempts {
			return err
		}
		// Back off with jitter so that processes contending for the file
		// don't retry in lockstep.
		wait := time.Duration(attempt*attempt)*50*time.Millisecond +
			rand.N(50*time.Millisecond)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		}
	}
}

func (s *Store) tryTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil) // BEGIN IMMEDIATE, from the DSN
	if err != nil {
		return translate(err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback() // the error that matters is fn's
		return err
	}
	return translate(tx.Commit())
}

func isBusy(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() & 0xff { // the primary code; extended codes are on
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
		return true
	}
	return false
}

// translate maps SQLite result codes onto the store's error contract. The
// original error stays wrapped for logs; SQLite's messages name columns, never
// values, so no key material leaks through them. Errors that are not SQLite's
// (fn's, context cancellation) pass through, as do errors already translated.
func translate(err error) error {
	var se *sqlite.Error
	if !errors.As(err, &se) || errors.Is(err, keys.ErrAlreadyExists) || errors.Is(err, keys.ErrUnavailable) {
		return err
	}
	switch se.Code() {
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return fmt.Errorf("%w: %w", keys.ErrAlreadyExists, err)
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_BUSY, // another process held the lock past every retry
		sqlite3.SQLITE_LOCKED,
		sqlite3.SQLITE_IOERR,
		sqlite3.SQLITE_FULL,
		sqlite3.SQLITE_CANTOPEN,
		sqlite3.SQLITE_READONLY,
		sqlite3.SQLITE_NOMEM,
		sqlite3.SQLITE_PROTOCOL:
		return fmt.Errorf("%w: %w", keys.ErrUnavailable, err)
	}
	return err
}
