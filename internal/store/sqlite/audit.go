package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/store"
)

// eventColumns are the columns of audit_events, in scanEvent's order.
const eventColumns = `seq, event_time, actor, action, key_id, source, before, after, changed, detail, prev_hash, hash`

// appendAudit appends the event a describes to the chain, in tx. Write
// transactions begin IMMEDIATE, holding the database's one write lock, so
// no other appender, of this process or another, runs between reading the
// head and writing it back.
func (s *Store) appendAudit(ctx context.Context, tx *sql.Tx, a store.Audit, keyID string, before, after *keys.Key) error {
	var seq int64
	var head []byte
	if err := tx.QueryRowContext(ctx, "SELECT seq, hash FROM audit_head").Scan(&seq, &head); err != nil {
		return fmt.Errorf("append audit event: read chain head: %w", translate(err))
	}
	e := store.NewEvent(a, keyID, before, after, seq, head, s.now())
	j, err := store.EncodeEventJSON(e)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO audit_events (`+eventColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.Seq, e.Time.UnixMicro(), e.Actor, e.Action, e.KeyID, e.Source,
		nullText(j.Before), nullText(j.After), string(j.Changed), e.Detail, e.PrevHash, e.Hash); err != nil {
		return fmt.Errorf("append audit event %d: %w", e.Seq, translate(err))
	}
	if _, err := tx.ExecContext(ctx, "UPDATE audit_head SET seq = ?, hash = ?", e.Seq, e.Hash); err != nil {
		return fmt.Errorf("append audit event %d: %w", e.Seq, translate(err))
	}
	return nil
}

// AppendAudit appends an event no key write accompanies; see store.Store.
func (s *Store) AppendAudit(ctx context.Context, a store.Audit) error {
	if err := store.CheckAudit(a); err != nil {
		return fmt.Errorf("append audit event: %w", err)
	}
	return s.inTx(ctx, func(tx *sql.Tx) error { return s.appendAudit(ctx, tx, a, a.KeyID, nil, nil) })
}

// ListAudit returns a page of events, newest first; see store.Store.
func (s *Store) ListAudit(ctx context.Context, q store.AuditQuery) ([]*audit.Event, error) {
	if err := store.CheckAuditQuery(q); err != nil {
		return nil, fmt.Errorf("list audit events: %w", err)
	}
	var where []string
	var args []any
	if q.KeyID != "" {
		where = append(where, "key_id = ?")
		args = append(args, q.KeyID)
	}
	if q.BeforeSeq > 0 {
		where = append(where, "seq < ?")
		args = append(args, q.BeforeSeq)
	}
	query := "SELECT " + eventColumns + " FROM audit_events"
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY seq DESC LIMIT ?"
	args = append(args, q.Limit)
	events, err := s.queryEvents(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list audit events: %w", err)
	}
	return events, nil
}

// ScanAudit feeds every event to fn, oldest first; see store.Store. Each
// batch is one query, and fn runs between them, so no read transaction
// stays open (holding back WAL checkpoints) while fn works.
func (s *Store) ScanAudit(ctx context.Context, fn func(*audit.Event) error) error {
	var after int64
	for {
		events, err := s.queryEvents(ctx, "SELECT "+eventColumns+" FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?",
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
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, translate(err)
	}
	defer rows.Close()
	var out []*audit.Event
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, translate(err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, translate(err)
	}
	return out, nil
}

// scanEvent reads eventColumns into an event.
func scanEvent(sc interface{ Scan(...any) error }) (*audit.Event, error) {
	var e audit.Event
	var t int64
	var before, after sql.NullString
	var changed string
	if err := sc.Scan(&e.Seq, &t, &e.Actor, &e.Action, &e.KeyID, &e.Source,
		&before, &after, &changed, &e.Detail, &e.PrevHash, &e.Hash); err != nil {
		return nil, err
	}
	e.Time = fromMicros(t)
	j := store.EventJSON{Changed: []byte(changed)}
	if before.Valid {
		j.Before = []byte(before.String)
	}
	if after.Valid {
		j.After = []byte(after.String)
	}
	if err := j.Decode(&e); err != nil {
		return nil, err
	}
	return &e, nil
}

// nullText is NULL for no document, the text otherwise.
func nullText(b []byte) sql.NullString {
	if b == nil {
		return sql.NullString{}
	}
	return sql.NullString{String: string(b), Valid: true}
}
