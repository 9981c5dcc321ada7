package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyward/keyward/internal/store"
)

// RecordUsage adds usage counts and last-used times; see store.Store.
//
// The transaction first takes KEY SHARE locks on the keys the batch names,
// in id order: a Delete under way finishes first (and its key is then not
// found), a Delete that comes later waits for this batch, and the foreign
// keys' own checks find the locks already held. Skipping the keys not found
// here is how counts for deleted keys are dropped without failing the batch,
// and locking them first is what keeps a concurrent Delete (which locks its
// key, then the usage rows it cascades to) from deadlocking with it. Rows
// are then upserted in key order, so concurrent batches queue rather than
// deadlock too.
func (s *Store) RecordUsage(ctx context.Context, counts []store.UsageCount, lastUsed map[string]time.Time) error {
	b := store.NewUsageBatch(counts, lastUsed)
	ids := b.KeyIDs()
	if len(ids) == 0 {
		return nil
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, "SELECT id FROM api_keys WHERE id = ANY($1) ORDER BY id FOR KEY SHARE", ids)
		if err != nil {
			return translate(ctx, err)
		}
		found, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return translate(ctx, err)
		}
		exists := make(map[string]bool, len(found))
		for _, id := range found {
			exists[id] = true
		}
		b := b.Keep(func(id string) bool { return exists[id] })
		if n := len(b.Counts); n > 0 {
			keyIDs, hours, reasons, ns := make([]string, n), make([]time.Time, n), make([]string, n), make([]int64, n)
			for i, c := range b.Counts {
				keyIDs[i], hours[i], reasons[i], ns[i] = c.KeyID, c.Hour, c.Reason, c.Count
			}
			// WITH ORDINALITY keeps the batch's (sorted) order.
			if _, err := tx.Exec(ctx, `INSERT INTO api_key_usage (key_id, hour, reason, count)
				SELECT key_id, hour, reason, count
				FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::bigint[])
					WITH ORDINALITY AS u(key_id, hour, reason, count, i)
				ORDER BY i
				ON CONFLICT (key_id, hour, reason) DO UPDATE SET count = api_key_usage.count + excluded.count`,
				keyIDs, hours, reasons, ns); err != nil {
				return translate(ctx, err)
			}
		}
		if n := len(b.LastUsed); n > 0 {
			keyIDs, times := make([]string, n), make([]time.Time, n)
			for i, l := range b.LastUsed {
				keyIDs[i], times[i] = l.KeyID, l.Time
			}
			if _, err := tx.Exec(ctx, `INSERT INTO api_key_last_used (key_id, last_used_time)
				SELECT key_id, t
				FROM unnest($1::text[], $2::timestamptz[]) WITH ORDINALITY AS u(key_id, t, i)
				ORDER BY i
				ON CONFLICT (key_id) DO UPDATE SET last_used_time = excluded.last_used_time
				WHERE api_key_last_used.last_used_time < excluded.last_used_time`,
				keyIDs, times); err != nil {
				return translate(ctx, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record usage: %w", err)
	}
	return nil
}

// Usage returns one key's hourly counts; see store.Store.
func (s *Store) Usage(ctx context.Context, id string, from, to time.Time) ([]store.UsageCount, error) {
	rows, err := s.pool.Query(ctx, `SELECT hour, reason, count FROM api_key_usage
		WHERE key_id = $1 AND hour >= $2 AND hour < $3
		ORDER BY hour, reason`,
		id, store.Micro(from), store.Micro(to))
	if err != nil {
		return nil, fmt.Errorf("usage of key %s: %w", id, translate(ctx, err))
	}
	defer rows.Close()
	var out []store.UsageCount
	for rows.Next() {
		u := store.UsageCount{KeyID: id}
		if err := rows.Scan(&u.Hour, &u.Reason, &u.Count); err != nil {
			return nil, fmt.Errorf("usage of key %s: %w", id, translate(ctx, err))
		}
		u.Hour = store.Micro(u.Hour)
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("usage of key %s: %w", id, translate(ctx, err))
	}
	return out, nil
}
