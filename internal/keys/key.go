package keys

import (
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"
)

// State is whether a key may be used.
type State int

const (
	StateActive State = iota + 1
	StateDisabled
)

func (s State) String() string {
	switch s {
	case StateActive:
		return "active"
	case StateDisabled:
		return "disabled"
	}
	return "unknown"
}

// Key is one API key as stored. The secret itself is never held here: only
// its SHA-256 (Hash) and the visible parts used for display and search.
type Key struct {
	ID          string
	Name        string
	Description string
	Environment string
	State       State
	Hash        []byte // SHA-256 of the full secret; unique
	Start       string // the first characters of the secret, for display and prefix search
	Last4       string // the last four characters of the secret, for display
	Scopes      []string
	Metadata    map[string]string
	CreateTime  time.Time
	UpdateTime  time.Time
	ExpireTime  time.Time // zero: never expires
	LastUsed    time.Time // zero: never used
	// AllowedCIDRs is the IP allow-list; empty admits every address.
	AllowedCIDRs []netip.Prefix
	RateLimit    RateLimit
	Quota        Quota
	QuotaUsage   QuotaUsage
	// The secret a rotation replaced, still accepted until PrevExpire
	// (RegenerateKey with a grace period); PrevHash is nil when there is none.
	PrevHash   []byte
	PrevStart  string
	PrevLast4  string
	PrevExpire time.Time
	// Sealed is the secret encrypted under the master key (a recoverable
	// key), nil otherwise. Never sent to Redis, never rendered.
	Sealed []byte
	// Version increases by one with every write of the row, in the same
	// transaction; caches use it so an older snapshot never replaces a newer
	// one, and to reuse a decoded snapshot: a version names one content, so
	// no write may change a row without bumping it.
	Version int64

	// view memoises one transport rendering of this snapshot (see View).
	view atomic.Pointer[any]
}

// View returns render(k), computed once per snapshot. Cached snapshots are
// shared and never modified, so the hot path can reuse their rendering
// instead of building it on every call. Never call it on a Key that will
// still be modified.
func (k *Key) View(render func(*Key) any) any {
	if v := k.view.Load(); v != nil {
		return *v
	}
	v := render(k)
	k.view.Store(&v)
	return v
}

// Etag is the opaque concurrency token clients echo back (AIP-154).
func (k *Key) Etag() string { return strconv.FormatInt(k.Version, 10) }

// Masked is the display form of the secret: its visible start, an ellipsis, its last four.
func (k *Key) Masked() string { return k.Start + "…" + k.Last4 }

// Expired reports whether the key has an expiry at or before now.
func (k *Key) Expired(now time.Time) bool {
	return !k.ExpireTime.IsZero() && !now.Before(k.ExpireTime)
}

// HasScope reports whether the key carries scope s exactly, wildcards aside:
// the check for the admin scope.
func (k *Key) HasScope(s string) bool {
	for _, have := range k.Scopes {
		if have == s {
			return true
		}
	}
	return false
}

// Clone returns a deep copy, so cached keys can be handed out without sharing slices or maps.
func (k *Key) Clone() *Key {
	c := &Key{
		ID: k.ID, Name: k.Name, Description: k.Description, Environment: k.Environment, State: k.State,
		Hash: append([]byte(nil), k.Hash...), Start: k.Start, Last4: k.Last4,
		Scopes:     append([]string(nil), k.Scopes...),
		CreateTime: k.CreateTime, UpdateTime: k.UpdateTime, ExpireTime: k.ExpireTime, LastUsed: k.LastUsed,
		Version:      k.Version,
		AllowedCIDRs: append([]netip.Prefix(nil), k.AllowedCIDRs...),
		RateLimit:    k.RateLimit, Quota: k.Quota, QuotaUsage: k.QuotaUsage,
		PrevHash: append([]byte(nil), k.PrevHash...), PrevStart: k.PrevStart, PrevLast4: k.PrevLast4,
		PrevExpire: k.PrevExpire,
		Sealed:     append([]byte(nil), k.Sealed...),
	}
	if len(k.Sealed) == 0 {
		c.Sealed = nil
	}
	if len(k.AllowedCIDRs) == 0 {
		c.AllowedCIDRs = nil
	}
	if len(k.PrevHash) == 0 {
		c.PrevHash = nil
	}
	if k.Metadata != nil {
		c.Metadata = make(map[string]string, len(k.Metadata))
		for n, v := range k.Metadata {
			c.Metadata[n] = v
		}
	}
	return c
}

// Change is what a secret's hash resolves to after a committed write: Key,
// or nothing (Key nil) from Version on. Caches install changes so they never
// have to guess.
type Change struct {
	Hash    []byte
	Key     *Key
	Version int64
}
