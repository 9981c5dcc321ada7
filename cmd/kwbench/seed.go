package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/keymat"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/store/postgres"
)

// benchDB is the fresh database one kwbench run owns.
type benchDB struct {
	admin string // DSN of a database on the same server, for CREATE/DROP
	name  string
	dsn   string
}

func createDB(ctx context.Context, adminDSN string) (*benchDB, error) {
	var b [6]byte
	rand.Read(b[:])
	db := &benchDB{admin: adminDSN, name: "keyward_bench_" + hex.EncodeToString(b[:])}
	u, err := url.Parse(adminDSN)
	if err != nil || u.Scheme == "" {
		return nil, fmt.Errorf("-postgres: want a postgres:// URL")
	}
	u.Path = "/" + db.name
	db.dsn = u.String()
	if err := db.exec(ctx, "CREATE DATABASE "+db.name); err != nil {
		return nil, fmt.Errorf("create database: %w", err)
	}
	return db, nil
}

func (db *benchDB) exec(ctx context.Context, sql string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, db.admin)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// drop removes the database even if connections are still open; it runs
// during cleanup, so it uses its own context.
func (db *benchDB) drop() error {
	return db.exec(context.Background(), "DROP DATABASE IF EXISTS "+db.name+" WITH (FORCE)")
}

// seed opens the store directly (which applies Keyward's migrations) and
// creates n active keys through store.Create, concurrently, returning their
// secrets. Going through the Store keeps the rows exactly as Keyward writes
// them whatever its schema becomes. Commits are made asynchronous for the
// bench database only while seeding (synchronous_commit is reset before any
// Keyward instance connects), which makes the 100,000 inserts take seconds.
func seed(ctx context.Context, db *benchDB, n, workers int) ([]string, error) {
	if err := db.exec(ctx, "ALTER DATABASE "+db.name+" SET synchronous_commit = off"); err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	st, err := postgres.Open(ctx, db.dsn)
	if err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	secrets := make([]string, n)
	var next, done atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var firstErr error
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	stopProgress := make(chan struct{})
	go func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				logf("  seeded %d of %d keys", done.Load(), n)
			case <-stopProgress:
				return
			}
		}
	}()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || sctx.Err() != nil {
					return
				}
				s, err := keymat.Generate("live")
				if err == nil {
					var id string
					id, err = keys.NewID(time.Now())
					if err == nil {
						_, err = st.Create(sctx, &keys.Key{
							ID:          id,
							Name:        fmt.Sprintf("bench key %06d", i),
							Environment: s.Environment(),
							State:       keys.StateActive,
							Hash:        s.Hash(),
							Start:       s.Start(),
							Last4:       s.Last4(),
						}, "", store.Audit{Actor: "kwbench", Action: audit.ActionCreate})
					}
				}
				if err != nil {
					once.Do(func() { firstErr = err; cancel() })
					return
				}
				secrets[i] = s.String()
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	close(stopProgress)
	st.Close()
	if firstErr != nil {
		return nil, fmt.Errorf("seed: %w", firstErr)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	logf("  seeded %d keys in %.1fs (%.0f/s)", n, time.Since(start).Seconds(), float64(n)/time.Since(start).Seconds())
	if err := db.exec(ctx, "ALTER DATABASE "+db.name+" RESET synchronous_commit"); err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	// Statistics and a visibility map now, rather than autovacuum waking up
	// in the middle of a measurement.
	if err := execIn(ctx, db.dsn, "VACUUM ANALYZE api_keys"); err != nil {
		return nil, fmt.Errorf("seed: vacuum: %w", err)
	}
	return secrets, nil
}

func execIn(ctx context.Context, dsn, sql string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}
