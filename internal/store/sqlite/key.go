package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/store"
)

// querier is what reads need from both *sql.DB and *sql.Tx.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// columns are the columns of api_keys a key is written to, in the order of
// row.args and scan. api_keys.last_used_time is not among them: LastUsed
// lives in api_key_last_used (see migration 0004).
const columns = `id, name, description, environment, state, hash, start, last4,
	scopes, metadata, create_time, update_time, expire_time, version,
	policy, prev_hash, prev_start, prev_last4, prev_expire_time, sealed`

// selectKeys reads keys (as k) with their quota usage and last use, in scan's
// order.
const selectKeys = `SELECT k.id, k.name, k.description, k.environment, k.state, k.hash, k.start, k.last4,
	k.scopes, k.metadata, k.create_time, k.update_time, k.expire_time, k.version,
	k.policy, k.prev_hash, k.prev_start, k.prev_last4, k.prev_expire_time, k.sealed,
	coalesce(u.period, ''), coalesce(u.used, 0), lu.last_used_time
	FROM api_keys k
	LEFT JOIN api_key_quota u ON u.key_id = k.id
	LEFT JOIN api_key_last_used lu ON lu.key_id = k.id`

// Create inserts k; see store.Store.
func (s *Store) Create(ctx context.Context, k *keys.Key, requestID string, a store.Audit) (*keys.Key, error) {
	if k.ID == "" {
		return nil, keys.Invalid("id", "must not be empty")
	}
	if err := store.CheckAudit(a); err != nil {
		return nil, fmt.Errorf("create key %s: %w", k.ID, err)
	}
	c := k.Clone()
	store.Normalize(c)
	now := store.Micro(s.now())
	c.CreateTime, c.UpdateTime, c.Version = now, now, 1
	c.QuotaUsage, c.LastUsed = keys.QuotaUsage{}, time.Time{} // a new key has used nothing
	r, err := encode(c)
	if err != nil {
		return nil, fmt.Errorf("create key %s: %w", k.ID, err)
	}
	var rid any // NULL: request ids only collide when given
	if requestID != "" {
		rid = requestID
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		// Checked first, in the same (immediate, so exclusive) transaction:
		// a retried create must learn which key it already made even if
		// its new id or hash also collides.
		if requestID != "" {
			var existing string
			err := tx.QueryRowContext(ctx, "SELECT id FROM api_keys WHERE request_id = ?", requestID).Scan(&existing)
			if err == nil {
				return fmt.Errorf("request_id already used by key %s: %w", existing, keys.ErrAlreadyExists)
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return translate(err)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO api_keys (`+columns+`, name_fold, request_id)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			append(r.args(), fold(c.Name), rid)...); err != nil {
			return translate(err)
		}
		return s.appendAudit(ctx, tx, a, c.ID, nil, c)
	})
	if err != nil {
		return nil, fmt.Errorf("create key %s: %w", k.ID, err)
	}
	return c, nil
}

// Get returns the key with this id.
func (s *Store) Get(ctx context.Context, id string) (*keys.Key, error) {
	k, err := getOne(ctx, s.db, "WHERE k.id = ?", id)
	if err != nil {
		return nil, fmt.Errorf("get key %s: %w", id, err)
	}
	return k, nil
}

// GetByHash returns the key whose current or previous secret hashes to
// hash; see store.Store.
func (s *Store) GetByHash(ctx context.Context, hash []byte) (*keys.Key, error) {
	// Two indexed equalities, which SQLite looks up one index each (a
	// MULTI-INDEX OR). The order prefers a current hash, should another key
	// hold the same value as its previous one.
	k, err := getOne(ctx, s.db, "WHERE k.hash = ?1 OR k.prev_hash = ?1 ORDER BY k.hash = ?1 DESC LIMIT 1", hash)
	if err != nil {
		return nil, fmt.Errorf("get key by hash: %w", err) // never the hash itself
	}
	return k, nil
}

// getOne reads the first key that selectKeys followed by tail (a WHERE
// clause with its one argument) yields.
func getOne(ctx context.Context, q querier, tail string, arg any) (*keys.Key, error) {
	k, err := scan(q.QueryRowContext(ctx, selectKeys+" "+tail, arg))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, keys.ErrNotFound
	}
	if err != nil {
		return nil, translate(err)
	}
	return k, nil
}

// List returns a page of matching keys; see store.ListQuery.
func (s *Store) List(ctx context.Context, q store.ListQuery) ([]*keys.Key, error) {
	if q.Limit < 1 {
		return nil, keys.Invalid("limit", "must be at least 1, got %d", q.Limit)
	}
	// Only the filters that are set become conditions, so that a lone
	// filter can use its index.
	var or []string
	var args []any
	if q.NameContains != "" {
		// instr matches literally, so no wildcard in the input needs escaping.
		or = append(or, "instr(k.name_fold, ?) > 0")
		args = append(args, fold(q.NameContains))
	}
	if len(q.Hash) > 0 {
		or = append(or, "k.hash = ?", "k.prev_hash = ?")
		args = append(args, q.Hash, q.Hash)
	}
	if q.StartPrefix != "" {
		// GLOB, unlike LIKE, is case-sensitive, as the secret is; the
		// escaped pattern can use the index on start.
		or = append(or, "k.start GLOB ?", "(k.start <> '' AND substr(?, 1, length(k.start)) = k.start)")
		args = append(args, escapeGlob(q.StartPrefix)+"*", q.StartPrefix)
	}
	var and []string
	if len(or) > 0 {
		and = append(and, "("+strings.Join(or, " OR ")+")")
	}
	if !q.UnusedBefore.IsZero() {
		and = append(and, "coalesce(lu.last_used_time, k.create_time) < ?")
		args = append(args, store.Micro(q.UnusedBefore).UnixMicro())
	}
	if q.AfterID != "" {
		and = append(and, "k.id > ?")
		args = append(args, q.AfterID)
	}
	query := selectKeys
	if len(and) > 0 {
		query += " WHERE " + strings.Join(and, " AND ")
	}
	query += " ORDER BY k.id LIMIT ?"
	args = append(args, q.Limit)

	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", translate(err))
	}
	defer rows.Close()
	var out []*keys.Key
	for rows.Next() {
		k, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("list keys: %w", translate(err))
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list keys: %w", translate(err))
	}
	return out, nil
}

// Update changes one key through fn; see store.Store.
func (s *Store) Update(ctx context.Context, id string, fn func(*keys.Key) error, a store.Audit) (before, after *keys.Key, err error) {
	if err := store.CheckAudit(a); err != nil {
		return nil, nil, fmt.Errorf("update key %s: %w", id, err)
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		if before, err = getOne(ctx, tx, "WHERE k.id = ?", id); err != nil {
			return err
		}
		after = before.Clone()
		if err := fn(after); err != nil {
			return err
		}
		store.Normalize(after)
		// The store's fields are the store's, whatever fn did to them.
		after.ID, after.CreateTime = before.ID, before.CreateTime
		after.Version = before.Version + 1
		after.UpdateTime = store.Micro(s.now())
		after.QuotaUsage, after.LastUsed = before.QuotaUsage, before.LastUsed
		r, err := encode(after)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE api_keys SET
			name = ?, name_fold = ?, description = ?, environment = ?, state = ?,
			hash = ?, start = ?, last4 = ?, scopes = ?, metadata = ?,
			expire_time = ?, version = ?, update_time = ?,
			policy = ?, prev_hash = ?, prev_start = ?, prev_last4 = ?, prev_expire_time = ?,
			sealed = ?
			WHERE id = ?`,
			after.Name, fold(after.Name), after.Description, after.Environment, int64(after.State),
			after.Hash, after.Start, after.Last4, r.scopes, r.metadata,
			r.expire, after.Version, r.update,
			r.policy, after.PrevHash, after.PrevStart, after.PrevLast4, r.prevExpire,
			after.Sealed,
			id)
		if err != nil {
			return translate(err)
		}
		if after.Quota != before.Quota { // a new quota starts its count afresh
			after.QuotaUsage = keys.QuotaUsage{}
			if _, err := tx.ExecContext(ctx, "DELETE FROM api_key_quota WHERE key_id = ?", id); err != nil {
				return translate(err)
			}
		}
		return s.appendAudit(ctx, tx, a, id, before, after)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("update key %s: %w", id, err)
	}
	return before, after, nil
}

// Delete removes one key once fn (if any) approves it; see store.Store.
func (s *Store) Delete(ctx context.Context, id string, fn func(*keys.Key) error, a store.Audit) (*keys.Key, error) {
	if err := store.CheckAudit(a); err != nil {
		return nil, fmt.Errorf("delete key %s: %w", id, err)
	}
	var k *keys.Key
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		if k, err = getOne(ctx, tx, "WHERE k.id = ?", id); err != nil {
			return err
		}
		if fn != nil {
			if err := fn(k.Clone()); err != nil {
				return err
			}
		}
		// The usage rows go with it (ON DELETE CASCADE); the audit
		// events stay.
		if _, err = tx.ExecContext(ctx, "DELETE FROM api_keys WHERE id = ?", id); err != nil {
			return translate(err)
		}
		return s.appendAudit(ctx, tx, a, id, k, nil)
	})
	if err != nil {
		return nil, fmt.Errorf("delete key %s: %w", id, err)
	}
	return k, nil
}

// ConsumeQuota counts one use of a key's quota; see store.Store.
//
// One statement, in a write transaction so that it queues behind this
// process's other writers and is retried if another process holds the file:
// a first use inserts the count; otherwise the update is applied only if the
// period moved on (a fresh count) or the count is below the limit. Writers
// are serialised, so none overshoot. The foreign key turns a use of a
// deleted key into an error rather than an orphan count.
func (s *Store) ConsumeQuota(ctx context.Context, id string, q keys.Quota, now time.Time) (int64, error) {
	if err := store.CheckQuota(q); err != nil {
		return 0, fmt.Errorf("consume quota of key %s: %w", id, err)
	}
	period, _ := q.Period(now)
	var used int64
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `INSERT INTO api_key_quota (key_id, period, used) VALUES (?1, ?2, 1)
			ON CONFLICT (key_id) DO UPDATE SET
				period = excluded.period,
				used = CASE WHEN api_key_quota.period = excluded.period THEN api_key_quota.used + 1 ELSE 1 END
			WHERE api_key_quota.period <> excluded.period OR api_key_quota.used < ?3
			RETURNING used`,
			id, period, q.Limit).Scan(&used)
		var se *sqlite.Error
		switch {
		case errors.Is(err, sql.ErrNoRows): // the WHERE refused the update
			return keys.ErrQuotaExceeded
		case errors.As(err, &se) && se.Code() == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
			return keys.ErrNotFound
		}
		return translate(err)
	})
	if err != nil {
		return 0, fmt.Errorf("consume quota of key %s: %w", id, err)
	}
	return q.Limit - used, nil
}

// row is a key's column values in the types SQLite stores.
type row struct {
	k                        *keys.Key
	scopes, metadata, policy string
	create, update           int64
	expire, prevExpire       sql.NullInt64
	lastUsed                 sql.NullInt64 // read only: api_key_last_used's
}

func encode(k *keys.Key) (row, error) {
	scopes, err := json.Marshal(k.Scopes)
	if err != nil {
		return row{}, fmt.Errorf("encode scopes: %w", err)
	}
	metadata, err := json.Marshal(k.Metadata)
	if err != nil {
		return row{}, fmt.Errorf("encode metadata: %w", err)
	}
	policy, err := store.EncodePolicy(k)
	if err != nil {
		return row{}, err
	}
	return row{
		k:          k,
		scopes:     string(scopes),
		metadata:   string(metadata),
		policy:     policy,
		create:     k.CreateTime.UnixMicro(),
		update:     k.UpdateTime.UnixMicro(),
		expire:     nullMicros(k.ExpireTime),
		prevExpire: nullMicros(k.PrevExpire),
	}, nil
}

// args are the values of columns, in order.
func (r row) args() []any {
	k := r.k
	return []any{k.ID, k.Name, k.Description, k.Environment, int64(k.State), k.Hash, k.Start, k.Last4,
		r.scopes, r.metadata, r.create, r.update, r.expire, k.Version,
		r.policy, k.PrevHash, k.PrevStart, k.PrevLast4, r.prevExpire, k.Sealed}
}

// scan reads the columns of selectKeys into a key.
func scan(sc interface{ Scan(...any) error }) (*keys.Key, error) {
	var k keys.Key
	var r row
	var state int64
	if err := sc.Scan(&k.ID, &k.Name, &k.Description, &k.Environment, &state, &k.Hash, &k.Start, &k.Last4,
		&r.scopes, &r.metadata, &r.create, &r.update, &r.expire, &k.Version,
		&r.policy, &k.PrevHash, &k.PrevStart, &k.PrevLast4, &r.prevExpire, &k.Sealed,
		&k.QuotaUsage.Period, &k.QuotaUsage.Used, &r.lastUsed); err != nil {
		return nil, err
	}
	k.State = keys.State(state)
	if err := json.Unmarshal([]byte(r.scopes), &k.Scopes); err != nil {
		return nil, fmt.Errorf("key %s: decode scopes: %w", k.ID, err)
	}
	if err := json.Unmarshal([]byte(r.metadata), &k.Metadata); err != nil {
		return nil, fmt.Errorf("key %s: decode metadata: %w", k.ID, err)
	}
	k.CreateTime = fromMicros(r.create)
	k.UpdateTime = fromMicros(r.update)
	if r.expire.Valid {
		k.ExpireTime = fromMicros(r.expire.Int64)
	}
	if r.lastUsed.Valid {
		k.LastUsed = fromMicros(r.lastUsed.Int64)
	}
	if r.prevExpire.Valid {
		k.PrevExpire = fromMicros(r.prevExpire.Int64)
	}
	if err := store.DecodePolicy([]byte(r.policy), &k); err != nil {
		return nil, fmt.Errorf("key %s: %w", k.ID, err)
	}
	store.Normalize(&k)
	return &k, nil
}

func nullMicros(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixMicro(), Valid: true}
}

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

// fold is the case folding of name search; the Postgres backend uses the same.
func fold(s string) string { return strings.ToLower(s) }

// escapeGlob makes s match itself literally in a GLOB pattern: each of the
// metacharacters * ? [ becomes a one-character class.
func escapeGlob(s string) string {
	return strings.NewReplacer("[", "[[]", "*", "[*]", "?", "[?]").Replace(s)
}
