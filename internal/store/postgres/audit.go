package postgres

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/store"
)

// eventColumns are the columns of audit_events, in scanEvent's order.
const eventColumns = `seq, event_time, actor, action, key_id, source, before, after, changed, detail, prev_hash, hash`

// appendAudit appends the event a describes to the chain, in tx. It locks
// the chain's head row first, so appenders from every instance queue there
// until the appender before them commits or rolls back; at READ COMMITTED
// the locked row is then read as that transaction left it. Callers take
// this lock last, after the key rows they write, so that no transaction
// holding the head waits for another's row lock (and appends, the one
// serial part of a write, hold it as briefly as possible).
func (s *Store) appendAudit(ctx context.Context, tx pgx.Tx, a store.Audit, keyID string, before, after *keys.Key) error {
	var seq int64
	var head []byte
	if err := tx.QueryRow(ctx, "SELECT seq, hash FROM audit_head FOR UPDATE").Scan(&seq, &head); err != nil {
		return fmt.Errorf("append audit event: read chain head: %w", translate(ctx, err))
	}
	e := store.NewEvent(a, keyID, before, after, seq, head, s.now())
	j, err := store.EncodeEventJSON(e)
	if err != nil {
		return err
	}
	// json columns are sent as text: pgx passes a string through as is,
	// so the stored text is exactly what was hashed.
	_, err = tx.Exec(ctx, `WITH event AS (
			INSERT INTO audit_events (`+eventColumns+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
		)
		UPDATE audit_head SET seq = $1, hash = $12`,
		e.Seq, e.Time, e.Actor, e.Action, e.KeyID, e.Source,
		nullJSON(j.Before), nullJSON(j.After), string(j.Changed), e.Detail, e.PrevHash, e.Hash)
	if err != nil {
		return fmt.Errorf("append audit event %d: %w", e.Seq, translate(ctx, err))
	}
	return nil
}

// AppendAudit appends an event no key write accompanies; see store.Store.
func (s *Store) AppendAudit(ctx context.Context, a store.Audit) error {
	if err := store.CheckAudit(a); err != nil {
		return fmt.Errorf("append audit event: %w", err)
	}
	return s.inTx(ctx, func(tx pgx.Tx) error { return s.appendAudit(ctx, tx, a, a.KeyID, nil, nil) })
}

// ListAudit returns a page of events, newest first; see store.Store.
func (s *Store) ListAudit(ctx context.Context, q store.AuditQuery) ([]*audit.Event, error) {
	if err := store.CheckAuditQuery(q); err != nil {
		return nil, fmt.Errorf("list audit events: %w", err)
	}
	var args []any
	param := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	var where []string
	if q.KeyID != "" {
		where = append(where, "key_id = "+param(q.KeyID))
	}
	if q.BeforeSeq > 0 {
		where = append(where, "seq < "+param(q.BeforeSeq))
	}
	query := "SELECT " + eventColumns + " FROM audit_events"
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY seq DESC LIMIT " + param(q.Limit)
	events, err := s.queryEvents(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list audit events: %w", err)
	}
	return events, nil
}

// ScanAudit feeds every event to fn, oldest first; see store.Store.
//
// Each batch is one query, and fn runs between them, so no transaction
// stays open while fn works. Paging by seq misses nothing: an event's seq
// is taken under the head's lock, so event n commits before n+1 exists.
func (s *Store) ScanAudit(ctx context.Context, fn func(*audit.Event) error) error {
	var after int64
	for {
		events, err := s.queryEvents(ctx, "SELECT "+eventColumns+" FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2",
			after, store.ScanBatch)
		if err != nil {
			return fmt.Errorf("scan audit events: %w", err)
		}
		for _, e := range events {
			if err := fn(e); err != nil {
				return fmt.Errorf("scan audit events: at event %d: %w", e.Seq, err)
			}
			after = e.Seq
		}
		if len(events) < store.ScanBatch {
			return nil
		}
	}
}

func (s *Store) queryEvents(ctx context.Context, query string, args ...any) ([]*audit.Event, error) {
	rows, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, translate(ctx, err)
	}
	defer rows.Close()
	var out []*audit.Event
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, translate(ctx, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, translate(ctx, err)
	}
	return out, nil
}

// scanEvent reads eventColumns into an event.
func scanEvent(row pgx.Row) (*audit.Event, error) {
	var e audit.Event
	var j store.EventJSON
	var t time.Time
	if err := row.Scan(&e.Seq, &t, &e.Actor, &e.Action, &e.KeyID, &e.Source,
		&j.Before, &j.After, &j.Changed, &e.Detail, &e.PrevHash, &e.Hash); err != nil {
		return nil, err
	}
	e.Time = t
	if err := j.Decode(&e); err != nil {
		return nil, err
	}
	return &e, nil
}

// nullJSON is NULL for no document, the text otherwise.
func nullJSON(b []byte) *string {
	if b == nil {
		return nil
	}
	s := string(b)
	return &s
}
