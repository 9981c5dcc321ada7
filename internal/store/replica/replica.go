// Package replica routes a Store's reads that may be stale to a read
// replica, and everything else to the primary.
//
// What may be stale is decided here, once, by operation: only the admin's
// browsing reads — List (ListKeys and its search), Usage (GetKeyUsage's
// counts) and ListAudit (ListAuditEvents) — go to the replica. Everything
// else goes to the primary:
//   - GetByHash, the lookup behind every Validate, Check, forward-auth and
//     admin sign-in: the cache fills itself from it, and a fill from a
//     lagging replica would install a row older than a revocation that has
//     already returned. The cache's version guard cannot help: an old row
//     carries an old version, and after an eviction (or on a cold instance)
//     there is nothing newer to compare it with. So validation never reads a
//     replica;
//   - Get: writes read the row they will change (its secrets name the cache
//     entries to invalidate), RevealKey reads the sealed secret, and GetKey
//     gives an admin the etag for a conditional update; each must see the
//     latest write, and GetKey must show a write that has just returned;
//   - every write, ConsumeQuota (an exact count), ScanAudit (verification)
//     and Ping (readiness is the primary's);
//   - any method the Store interface gains later, until it is added here.
//
// A replica that cannot be reached is not an outage: its reads are retried
// on the primary.
package replica

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/store"
)

// Store is a store.Store whose stale-tolerant reads go to a replica. The
// embedded Store is the primary: every method not overridden below is the
// primary's.
type Store struct {
	store.Store
	replica store.Store
	log     *slog.Logger
	warned  atomic.Int64 // Unix seconds of the last "replica unavailable" warning
}

var _ store.Store = (*Store)(nil)

// New routes primary's stale-tolerant reads to replica. Close closes both.
func New(primary, replica store.Store, log *slog.Logger) *Store {
	if log == nil {
		log = slog.Default()
	}
	return &Store{Store: primary, replica: replica, log: log}
}

// List reads the replica: a key list or search may lag the primary.
func (s *Store) List(ctx context.Context, q store.ListQuery) ([]*keys.Key, error) {
	return read(s, ctx, "list keys", func(st store.Store) ([]*keys.Key, error) { return st.List(ctx, q) })
}

// Usage reads the replica: usage counts are written in batches anyway.
func (s *Store) Usage(ctx context.Context, id string, from, to time.Time) ([]store.UsageCount, error) {
	return read(s, ctx, "usage", func(st store.Store) ([]store.UsageCount, error) { return st.Usage(ctx, id, from, to) })
}

// ListAudit reads the replica: the newest events may be missing for as
// long as it lags.
func (s *Store) ListAudit(ctx context.Context, q store.AuditQuery) ([]*audit.Event, error) {
	return read(s, ctx, "list audit events", func(st store.Store) ([]*audit.Event, error) { return st.ListAudit(ctx, q) })
}

// Close closes the replica and the primary.
func (s *Store) Close() error {
	return errors.Join(s.replica.Close(), s.Store.Close())
}

// read runs f on the replica and, if the replica is unavailable while the
// caller still waits, on the primary.
func read[T any](s *Store, ctx context.Context, what string, f func(store.Store) (T, error)) (T, error) {
	v, err := f(s.replica)
	if err == nil || !errors.Is(err, keys.ErrUnavailable) || ctx.Err() != nil {
		return v, err
	}
	// At most one warning a minute.
	if now, last := time.Now().Unix(), s.warned.Load(); last <= now-60 && s.warned.CompareAndSwap(last, now) {
		s.log.WarnContext(ctx, "postgres replica unavailable; reading from the primary", "read", what, "err", err)
	}
	return f(s.Store)
}
