package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/keyward/keyward/internal/store"
)

// RecordUsage adds usage counts and last-used times; see store.Store. One
// write transaction, so no Delete runs between checking that a key exists
// and writing its rows: the EXISTS drops the counts of keys already gone.
func (s *Store) RecordUsage(ctx context.Context, counts []store.UsageCount, lastUsed map[string]time.Time) error {
	b := store.NewUsageBatch(counts, lastUsed)
	if len(b.Counts) == 0 && len(b.LastUsed) == 0 {
		return nil
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if len(b.Counts) > 0 {
			// The WHERE also settles the parsing ambiguity SQLite has
			// between INSERT … SELECT and an upsert's ON.
			st, err := tx.PrepareContext(ctx, `INSERT INTO api_key_usage (key_id, hour, reason, count)
				SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM api_keys WHERE id = ?1)
				ON CONFLICT (key_id, hour, reason) DO UPDATE SET count = count + excluded.count`)
			if err != nil {
				return translate(err)
			}
			defer st.Close()
			for _, c := range b.Counts {
				if _, err := st.ExecContext(ctx, c.KeyID, c.Hour.UnixMicro(), c.Reason, c.Count); err != nil {
					return translate(err)
				}
			}
		}
		if len(b.LastUsed) > 0 {
			st, err := tx.PrepareContext(ctx, `INSERT INTO api_key_last_used (key_id, last_used_time)
				SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM api_keys WHERE id = ?1)
				ON CONFLICT (key_id) DO UPDATE SET last_used_time = excluded.last_used_time
				WHERE last_used_time < excluded.last_used_time`)
			if err != nil {
				return translate(err)
			}
			defer st.Close()
			for _, l := range b.LastUsed {
				if _, err := st.ExecContext(ctx, l.KeyID, l.Time.UnixMicro()); err != nil {
					return translate(err)
				}
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
	rows, err := s.db.QueryContext(ctx, `SELECT hour, reason, count FROM api_key_usage
		WHERE key_id = ? AND hour >= ? AND hour < ?
		ORDER BY hour, reason`,
		id, store.Micro(from).UnixMicro(), store.Micro(to).UnixMicro())
	if err != nil {
		return nil, fmt.Errorf("usage of key %s: %w", id, translate(err))
	}
	defer rows.Close()
	var out []store.UsageCount
	for rows.Next() {
		u := store.UsageCount{KeyID: id}
		var hour int64
		if err := rows.Scan(&hour, &u.Reason, &u.Count); err != nil {
			return nil, fmt.Errorf("usage of key %s: %w", id, translate(err))
		}
		u.Hour = fromMicros(hour)
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("usage of key %s: %w", id, translate(err))
	}
	return out, nil
}
