// Package store defines the one interface Keyward's source of truth
// implements, with its error contract. Implementations live in the
// postgres and sqlite subpackages and are held to it by storetest.
package store

import (
	"context"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/keys"
)

// Store is the durable source of truth for keys, their audit trail and their
// usage.
//
// Error contract, shared by every implementation:
//   - a missing key is keys.ErrNotFound (wrapped);
//   - a duplicate id or hash, or a PrevHash another key also has as its
//     PrevHash, is keys.ErrAlreadyExists;
//   - a store that cannot be reached returns an error wrapping keys.ErrUnavailable;
//   - an Audit without an Action is a *keys.InvalidArgumentError;
//   - on any error nothing is written: neither the key nor its audit event.
//
// Keys read back are normalised the same way by every implementation, so a
// key compares equal whichever backend produced it: times are UTC and
// truncated to microseconds, a zero time (no expiry, never used) is stored as
// NULL and read back as the zero time.Time (PrevExpire included), Scopes keep
// their order and are never nil (empty: a non-nil empty slice), Metadata is
// never nil (empty: a non-nil empty map), AllowedCIDRs keep their order and
// are nil when empty, PrevHash and Sealed are nil when empty, and
// RateLimit.Period is truncated to whole milliseconds. Every read (Get,
// GetByHash, List, both keys Update returns, the key Delete returns) fills
// QuotaUsage with the key's count as ConsumeQuota left it (the zero value if
// it has none), LastUsed with the time RecordUsage left (zero: never used),
// and Sealed with what Create or Update last wrote.
type Store interface {
	// Create inserts k with Version 1 and CreateTime/UpdateTime set to now
	// (truncated to microseconds, the precision both backends keep). If
	// requestID is non-empty and a key was already created with it, Create
	// writes nothing and returns an error wrapping keys.ErrAlreadyExists that
	// names the existing key's id, so a retried create never makes two keys.
	// k's QuotaUsage and LastUsed are ignored: a new key has used nothing.
	//
	// Every write (Create, Update, Delete) appends one audit event, described
	// by a, in its own transaction: the event exists exactly when the write
	// does (see AppendAudit for the event's fields). Create's event has no
	// Before and the created key as After.
	Create(ctx context.Context, k *keys.Key, requestID string, a Audit) (*keys.Key, error)
	// Get returns the key with this id.
	Get(ctx context.Context, id string) (*keys.Key, error)
	// GetByHash returns the key whose secret hashes to hash: the key whose
	// Hash or PrevHash equals hash. Which secret matched is for the caller to
	// tell by comparing k.Hash; whether a previous secret is still within its
	// grace period (PrevExpire) is the caller's judgement too. Should one key's
	// Hash equal another's PrevHash, the key with that Hash is returned.
	GetByHash(ctx context.Context, hash []byte) (*keys.Key, error)
	// List returns up to q.Limit matching keys with ID > q.AfterID, in ID order
	// (bytewise, whatever the database's collation). IDs sort by creation
	// time, so pages are stable while keys are added and deleted. A Limit
	// below 1 is a *keys.InvalidArgumentError: an unbounded read is never what
	// a caller wants from a table of keys.
	List(ctx context.Context, q ListQuery) ([]*keys.Key, error)
	// Update reads the key, calls fn on a copy inside one transaction and, if fn
	// returns nil, writes the copy with Version+1 and UpdateTime=now. It returns
	// the key as it was before and as written. fn's error is returned unchanged
	// (wrapped) and nothing is written. fn may change only the mutable fields:
	// ID, Version, CreateTime, UpdateTime, QuotaUsage and LastUsed are the
	// store's. If the write changes Quota, the key's usage count is deleted in
	// the same transaction (changing a key's quota starts its count afresh)
	// and after has a zero QuotaUsage; otherwise after keeps before's. fn may
	// be called again if the backend retries the transaction (SQLite after a
	// busy timeout), so it must do nothing but edit its argument.
	//
	// The audit event records before, after and the fields that differ
	// (audit.Changed); it is appended even if fn changed nothing, as the write
	// (and its new Version) happens all the same.
	Update(ctx context.Context, id string, fn func(*keys.Key) error, a Audit) (before, after *keys.Key, err error)
	// Delete removes the key after fn (which may be nil) approves the current
	// row inside the same transaction; it returns the row as deleted. Its
	// audit event has that row as Before and no After. The key's usage goes
	// with it; its audit events stay.
	Delete(ctx context.Context, id string, fn func(*keys.Key) error, a Audit) (*keys.Key, error)
	// AppendAudit appends an event that no key write accompanies (a reveal,
	// a failed sign-in), about key a.KeyID if set (which need not exist).
	//
	// Every event, whichever method appends it, gets the next sequence number
	// (consecutive from 1); the store's time (UTC, whole microseconds), taken
	// once the chain is locked, so that times follow the chain's order as far
	// as the instances' clocks agree; a's Actor, Action, Source and Detail,
	// made valid UTF-8 without NUL bytes (what both databases can store);
	// and PrevHash, the previous event's Hash. Hash is then
	// audit.Event.Seal(). The chain is extended atomically: concurrent
	// appends, from any instance, never fork it nor leave a gap.
	AppendAudit(ctx context.Context, a Audit) error
	// ListAudit returns up to q.Limit events, newest first, with Seq below
	// q.BeforeSeq (0: no bound), only key q.KeyID's if set. A Limit below 1
	// or a negative BeforeSeq is a *keys.InvalidArgumentError.
	ListAudit(ctx context.Context, q AuditQuery) ([]*audit.Event, error)
	// ScanAudit calls fn with every event, oldest first, until fn fails, and
	// returns fn's error (wrapped). Events are read in batches, not in one
	// transaction: fn may take its time, and events appended meanwhile are
	// included. Events read back seal to the Hash they were written with
	// unless someone changed them behind the store's back, which is what
	// audit.Verifier, fed by ScanAudit, finds out.
	ScanAudit(ctx context.Context, fn func(*audit.Event) error) error
	// RecordUsage adds counts to the keys' hourly usage and moves their
	// last-used times forward (never back), in one transaction. Hours are
	// truncated to the hour (UTC); counts below 1 are ignored. Counts and
	// times of keys that no longer exist are dropped without failing the
	// rest. Neither is part of a key's content: Version does not change.
	RecordUsage(ctx context.Context, counts []UsageCount, lastUsed map[string]time.Time) error
	// Usage returns key id's hourly counts with Hour in [from, to), oldest
	// first (then by Reason). A key that does not exist, or no longer does,
	// has none.
	Usage(ctx context.Context, id string, from, to time.Time) ([]UsageCount, error)
	// ConsumeQuota atomically counts one use of the key with this id against
	// quota q in the counting period q.Period(now), and returns how many uses
	// the period has left (q.Limit minus the count). A count kept for an
	// earlier period is replaced by a count of 1. If the period's count has
	// already reached q.Limit, nothing is written and the error wraps
	// keys.ErrQuotaExceeded. A missing key is keys.ErrNotFound; a q that is
	// not set (Limit < 1) or has an unknown Refill is a
	// *keys.InvalidArgumentError. It is exact under concurrency: n
	// concurrent calls against a fresh quota of limit l succeed min(n, l)
	// times, across every instance sharing the store. q is the caller's
	// (typically from a cached snapshot): the store does not compare it with
	// the key's stored Quota. The count is not part of the key's content and
	// does not change its Version.
	ConsumeQuota(ctx context.Context, id string, q keys.Quota, now time.Time) (remaining int64, err error)
	// Ping reports whether the store is reachable.
	Ping(ctx context.Context) error
	Close() error
}

// ListQuery selects a page of keys. The filters are ORed: a key matches when
// its name contains NameContains (case-insensitive), or its hash or prev hash
// equals Hash, or its visible start begins with StartPrefix (or StartPrefix begins with its
// visible start, for a typed beginning longer than what is stored). Empty
// filters are ignored; with none set, every key matches. Inputs are matched
// literally: LIKE and GLOB wildcards in them have no special meaning. The
// name match folds case with strings.ToLower (rune by rune, so non-ASCII
// names too) in Go rather than in the database, so both backends agree; the
// start match is case-sensitive, like the secret it is part of.
//
// UnusedBefore, if set, is ANDed with the rest: only keys whose LastUsed is
// before it, or that were never used and were created before it.
type ListQuery struct {
	NameContains string
	Hash         []byte
	StartPrefix  string
	UnusedBefore time.Time
	AfterID      string
	Limit        int
}

// Audit describes the audit event a write appends.
type Audit struct {
	Actor  string // the admin key id acting; "" for none (a failed sign-in)
	Action string // audit.ActionCreate, …; required
	KeyID  string // for AppendAudit; writes name their own key
	Source string // the client's address
	Detail string // free text: a leak report's reason, a sign-in failure's cause
}

// AuditQuery selects a page of the audit trail.
type AuditQuery struct {
	KeyID     string
	BeforeSeq int64
	Limit     int
}

// UsageCount is Count verifications of key KeyID with outcome Reason (a
// keyward.v1 reason name, REASON_VALID, …) in the hour starting at Hour.
type UsageCount struct {
	KeyID  string
	Hour   time.Time
	Reason string
	Count  int64
}
