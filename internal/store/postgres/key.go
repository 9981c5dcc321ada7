package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/store"
)

// querier is what reads need from both the pool and a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// columns are the columns of api_keys a key is written to, in scan's order.
// api_keys.last_used_time is not among them: LastUsed lives in
// api_key_last_used (see migration 0004).
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
	metadata, err := json.Marshal(c.Metadata)
	if err != nil {
		return nil, fmt.Errorf("create key %s: encode metadata: %w", k.ID, err)
	}
	policy, err := store.EncodePolicy(c)
	if err != nil {
		return nil, fmt.Errorf("create key %s: %w", k.ID, err)
	}
	var rid *string // NULL: request ids only collide when given
	if requestID != "" {
		rid = &requestID
	}
	// ON CONFLICT (request_id) is checked before the other unique indexes,
	// so a retried create learns which key it already made even if its new
	// id or hash also collides; and a create racing the first one waits for
	// it to commit rather than failing with a bare unique violation (the
	// SELECT, a statement of its own at READ COMMITTED, then sees the row).
	// The loop covers the key being deleted between the two statements.
	errGone := errors.New("the key holding the request_id was deleted")
	for range 3 {
		err := s.inTx(ctx, func(tx pgx.Tx) error {
			var id string
			err := tx.QueryRow(ctx, `INSERT INTO api_keys (`+columns+`, name_fold, request_id)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
					$15, $16, $17, $18, $19, $20, $21, $22)
				ON CONFLICT (request_id) DO NOTHING
				RETURNING id`,
				c.ID, c.Name, c.Description, c.Environment, int32(c.State), c.Hash, c.Start, c.Last4,
				c.Scopes, string(metadata), c.CreateTime, c.UpdateTime, nullTime(c.ExpireTime), c.Version,
				policy, c.PrevHash, c.PrevStart, c.PrevLast4, nullTime(c.PrevExpire), c.Sealed,
				fold(c.Name), rid).Scan(&id)
			if err == nil {
				return s.appendAudit(ctx, tx, a, c.ID, nil, c)
			}
			if !errors.Is(err, pgx.ErrNoRows) {
				return translate(ctx, err)
			}
			err = tx.QueryRow(ctx, "SELECT id FROM api_keys WHERE request_id = $1", requestID).Scan(&id)
			switch {
			case err == nil:
				return fmt.Errorf("request_id already used by key %s: %w", id, keys.ErrAlreadyExists)
			case errors.Is(err, pgx.ErrNoRows):
				return errGone
			}
			return translate(ctx, err)
		})
		if errors.Is(err, errGone) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("create key %s: %w", k.ID, err)
		}
		return c, nil
	}
	return nil, fmt.Errorf("create key %s: request_id keeps colliding with keys being deleted: %w", k.ID, keys.ErrUnavailable)
}

// Get returns the key with this id.
func (s *Store) Get(ctx context.Context, id string) (*keys.Key, error) {
	k, err := getOne(ctx, s.pool, "WHERE k.id = $1", id)
	if err != nil {
		return nil, fmt.Errorf("get key %s: %w", id, err)
	}
	return k, nil
}

// GetByHash returns the key whose current or previous secret hashes to
// hash; see store.Store.
func (s *Store) GetByHash(ctx context.Context, hash []byte) (*keys.Key, error) {
	// Two indexed equalities: the planner combines the two indexes (a
	// BitmapOr). The order prefers a current hash, should another key hold
	// the same value as its previous one.
	k, err := getOne(ctx, s.pool, "WHERE k.hash = $1 OR k.prev_hash = $1 ORDER BY k.hash = $1 DESC LIMIT 1", hash)
	if err != nil {
		return nil, fmt.Errorf("get key by hash: %w", err) // never the hash itself
	}
	return k, nil
}

// getOne reads the first key that selectKeys followed by tail (a WHERE
// clause with its one argument, and e.g. FOR UPDATE OF k) yields.
func getOne(ctx context.Context, q querier, tail string, arg any) (*keys.Key, error) {
	k, err := scan(q.QueryRow(ctx, selectKeys+" "+tail, arg))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, keys.ErrNotFound
	}
	if err != nil {
		return nil, translate(ctx, err)
	}
	return k, nil
}

// List returns a page of matching keys; see store.ListQuery.
func (s *Store) List(ctx context.Context, q store.ListQuery) ([]*keys.Key, error) {
	if q.Limit < 1 {
		return nil, keys.Invalid("limit", "must be at least 1, got %d", q.Limit)
	}
	var args []any
	param := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	// Only the filters that are set become conditions, so that a lone
	// filter can use its index.
	var or []string
	if q.NameContains != "" {
		// strpos matches literally, so no wildcard in the input needs escaping.
		or = append(or, "strpos(k.name_fold, "+param(fold(q.NameContains))+") > 0")
	}
	if len(q.Hash) > 0 {
		h := param(q.Hash)
		or = append(or, "k.hash = "+h, "k.prev_hash = "+h)
	}
	if q.StartPrefix != "" {
		// start is COLLATE "C", so LIKE 'abc%' can use its btree index.
		or = append(or,
			"k.start LIKE "+param(escapeLike(q.StartPrefix)+"%")+` ESCAPE '\'`,
			"(k.start <> '' AND left("+param(q.StartPrefix)+", length(k.start)) = k.start)")
	}
	var and []string
	if len(or) > 0 {
		and = append(and, "("+strings.Join(or, " OR ")+")")
	}
	if !q.UnusedBefore.IsZero() {
		and = append(and, "coalesce(lu.last_used_time, k.create_time) < "+param(store.Micro(q.UnusedBefore)))
	}
	if q.AfterID != "" {
		and = append(and, "k.id > "+param(q.AfterID))
	}
	query := selectKeys
	if len(and) > 0 {
		query += " WHERE " + strings.Join(and, " AND ")
	}
	query += " ORDER BY k.id LIMIT " + param(q.Limit)

	rows, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", translate(ctx, err))
	}
	defer rows.Close()
	var out []*keys.Key
	for rows.Next() {
		k, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("list keys: %w", translate(ctx, err))
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list keys: %w", translate(ctx, err))
	}
	return out, nil
}

// Update changes one key through fn; see store.Store.
func (s *Store) Update(ctx context.Context, id string, fn func(*keys.Key) error, a store.Audit) (before, after *keys.Key, err error) {
	if err := store.CheckAudit(a); err != nil {
		return nil, nil, fmt.Errorf("update key %s: %w", id, err)
	}
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		// OF k: the usage rows, on the nullable side of the joins, cannot
		// be locked; ConsumeQuota's and RecordUsage's upserts lock them.
		if before, err = getOne(ctx, tx, "WHERE k.id = $1 FOR UPDATE OF k", id); err != nil {
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
		metadata, err := json.Marshal(after.Metadata)
		if err != nil {
			return fmt.Errorf("encode metadata: %w", err)
		}
		policy, err := store.EncodePolicy(after)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE api_keys SET
			name = $1, name_fold = $2, description = $3, environment = $4, state = $5,
			hash = $6, start = $7, last4 = $8, scopes = $9, metadata = $10,
			expire_time = $11, version = $12, update_time = $13,
			policy = $14, prev_hash = $15, prev_start = $16, prev_last4 = $17, prev_expire_time = $18,
			sealed = $19
			WHERE id = $20`,
			after.Name, fold(after.Name), after.Description, after.Environment, int32(after.State),
			after.Hash, after.Start, after.Last4, after.Scopes, string(metadata),
			nullTime(after.ExpireTime), after.Version, after.UpdateTime,
			policy, after.PrevHash, after.PrevStart, after.PrevLast4, nullTime(after.PrevExpire),
			after.Sealed,
			id)
		if err != nil {
			return translate(ctx, err)
		}
		if after.Quota != before.Quota { // a new quota starts its count afresh
			after.QuotaUsage = keys.QuotaUsage{}
			if _, err := tx.Exec(ctx, "DELETE FROM api_key_quota WHERE key_id = $1", id); err != nil {
				return translate(ctx, err)
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
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		if k, err = getOne(ctx, tx, "WHERE k.id = $1 FOR UPDATE OF k", id); err != nil {
			return err
		}
		if fn != nil {
			if err := fn(k.Clone()); err != nil {
				return err
			}
		}
		// The usage rows go with it (ON DELETE CASCADE); the audit
		// events stay.
		if _, err = tx.Exec(ctx, "DELETE FROM api_keys WHERE id = $1", id); err != nil {
			return translate(ctx, err)
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
// One statement: a first use inserts the count; otherwise the conflict
// locks the count's row, and the update is applied only if the period moved
// on (a fresh count) or the count is below the limit. Concurrent calls queue
// on that row lock and each re-checks the count it finds, so none overshoot.
// The foreign key turns a use of a deleted key into an error rather than an
// orphan count.
func (s *Store) ConsumeQuota(ctx context.Context, id string, q keys.Quota, now time.Time) (int64, error) {
	if err := store.CheckQuota(q); err != nil {
		return 0, fmt.Errorf("consume quota of key %s: %w", id, err)
	}
	period, _ := q.Period(now)
	var used int64
	err := s.pool.QueryRow(ctx, `INSERT INTO api_key_quota (key_id, period, used) VALUES ($1, $2, 1)
		ON CONFLICT (key_id) DO UPDATE SET
			period = excluded.period,
			used = CASE WHEN api_key_quota.period = excluded.period THEN api_key_quota.used + 1 ELSE 1 END
		WHERE api_key_quota.period <> excluded.period OR api_key_quota.used < $3
		RETURNING used`,
		id, period, q.Limit).Scan(&used)
	var pe *pgconn.PgError
	switch {
	case errors.Is(err, pgx.ErrNoRows): // the WHERE refused the update
		return 0, fmt.Errorf("consume quota of key %s: %w", id, keys.ErrQuotaExceeded)
	case errors.As(err, &pe) && pe.Code == "23503": // foreign_key_violation
		return 0, fmt.Errorf("consume quota of key %s: %w", id, keys.ErrNotFound)
	case err != nil:
		return 0, fmt.Errorf("consume quota of key %s: %w", id, translate(ctx, err))
	}
	return q.Limit - used, nil
}

// scan reads columns into a key.
func scan(row pgx.Row) (*keys.Key, error) {
	var k keys.Key
	var state int32
	var metadata []byte
	var policy []byte
	var expire, lastUsed, prevExpire *time.Time
	if err := row.Scan(&k.ID, &k.Name, &k.Description, &k.Environment, &state, &k.Hash, &k.Start, &k.Last4,
		&k.Scopes, &metadata, &k.CreateTime, &k.UpdateTime, &expire, &k.Version,
		&policy, &k.PrevHash, &k.PrevStart, &k.PrevLast4, &prevExpire, &k.Sealed,
		&k.QuotaUsage.Period, &k.QuotaUsage.Used, &lastUsed); err != nil {
		return nil, err
	}
	k.State = keys.State(state)
	if err := json.Unmarshal(metadata, &k.Metadata); err != nil {
		return nil, fmt.Errorf("key %s: decode metadata: %w", k.ID, err)
	}
	if err := store.DecodePolicy(policy, &k); err != nil {
		return nil, fmt.Errorf("key %s: %w", k.ID, err)
	}
	if prevExpire != nil {
		k.PrevExpire = *prevExpire
	}
	if expire != nil {
		k.ExpireTime = *expire
	}
	if lastUsed != nil {
		k.LastUsed = *lastUsed
	}
	store.Normalize(&k)
	return &k, nil
}

// nullTime is NULL for the zero time, which means "never" here.
func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// fold is the case folding of name search; the SQLite backend uses the same.
func fold(s string) string { return strings.ToLower(s) }

// escapeLike makes s match itself literally in a LIKE pattern with ESCAPE '\'.
func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, "%", `\%`, "_", `\_`).Replace(s)
}
