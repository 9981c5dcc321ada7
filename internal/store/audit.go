package store

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/keys"
)

// CheckAudit is the validation every write's Audit must pass in every
// backend, before anything is written: an event needs an action.
func CheckAudit(a Audit) error {
	if a.Action == "" {
		return keys.Invalid("audit.action", "must not be empty")
	}
	return nil
}

// NewEvent is the event a backend appends after the chain's head (the
// sequence number and hash of the latest event; 0 and nil for none): a
// describes it, keyID names its key ("" for none), before and after are the
// key around the write (nil for none), and now is the store's time. Its Hash
// is sealed. Both backends build events here, so they cannot differ in what
// they record.
func NewEvent(a Audit, keyID string, before, after *keys.Key, headSeq int64, headHash []byte, now time.Time) *audit.Event {
	e := &audit.Event{
		Seq:    headSeq + 1,
		Time:   Micro(now),
		Actor:  storable(a.Actor),
		Action: storable(a.Action),
		KeyID:  storable(keyID),
		Source: storable(a.Source),
		Before: audit.SnapshotOf(before),
		After:  audit.SnapshotOf(after),
		Detail: storable(a.Detail),
	}
	if len(headHash) > 0 {
		e.PrevHash = headHash
	}
	e.Changed = audit.Changed(e.Before, e.After)
	e.Hash = e.Seal()
	return e
}

// storable is s as both databases can keep it: valid UTF-8 (PostgreSQL
// refuses anything else in text) without NUL bytes (which neither text type
// takes reliably). Seal hashes the stored form, so events read back verify.
func storable(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.ReplaceAll(s, "\x00", "\uFFFD")
}

// EventJSON is how an event's snapshots and changed fields are stored: the
// exact bytes json.Marshal produced, which DecodeEventJSON reads back to
// values that marshal (and so seal) the same. A nil snapshot is a nil slice
// (SQL NULL).
type EventJSON struct {
	Before, After, Changed []byte
}

// EncodeEventJSON is e's JSON columns.
func EncodeEventJSON(e *audit.Event) (EventJSON, error) {
	var j EventJSON
	var err error
	if e.Before != nil {
		if j.Before, err = json.Marshal(e.Before); err != nil {
			return j, fmt.Errorf("encode audit event %d: %w", e.Seq, err)
		}
	}
	if e.After != nil {
		if j.After, err = json.Marshal(e.After); err != nil {
			return j, fmt.Errorf("encode audit event %d: %w", e.Seq, err)
		}
	}
	if j.Changed, err = json.Marshal(e.Changed); err != nil { // "null" when nil
		return j, fmt.Errorf("encode audit event %d: %w", e.Seq, err)
	}
	return j, nil
}

// Decode sets e's Before, After and Changed from columns EncodeEventJSON
// wrote.
func (j EventJSON) Decode(e *audit.Event) error {
	e.Before, e.After, e.Changed = nil, nil, nil
	if j.Before != nil {
		e.Before = new(audit.Snapshot)
		if err := json.Unmarshal(j.Before, e.Before); err != nil {
			return fmt.Errorf("decode audit event %d: before: %w", e.Seq, err)
		}
	}
	if j.After != nil {
		e.After = new(audit.Snapshot)
		if err := json.Unmarshal(j.After, e.After); err != nil {
			return fmt.Errorf("decode audit event %d: after: %w", e.Seq, err)
		}
	}
	if err := json.Unmarshal(j.Changed, &e.Changed); err != nil {
		return fmt.Errorf("decode audit event %d: changed: %w", e.Seq, err)
	}
	if len(e.PrevHash) == 0 {
		e.PrevHash = nil
	}
	e.Time = Micro(e.Time)
	return nil
}

// CheckAuditQuery is the validation ListAudit's q must pass in every backend.
func CheckAuditQuery(q AuditQuery) error {
	if q.Limit < 1 {
		return keys.Invalid("limit", "must be at least 1, got %d", q.Limit)
	}
	if q.BeforeSeq < 0 {
		return keys.Invalid("before_seq", "must not be negative, got %d", q.BeforeSeq)
	}
	return nil
}

// ScanBatch is how many events ScanAudit reads per query.
const ScanBatch = 500
