package keys

import (
	"net/netip"
	"strings"
	"time"
)

// RateLimit allows on average Limit requests per Period, with bursts of up
// to Burst at once. The zero value is "no limit".
type RateLimit struct {
	Limit  int64
	Period time.Duration
	Burst  int64
}

// Set reports whether the key has a rate limit.
func (r RateLimit) Set() bool { return r.Limit > 0 }

// Refill says when a quota's count starts afresh.
type Refill int

const (
	RefillNever Refill = iota
	RefillDaily
	RefillMonthly
)

// Quota allows Limit successful validations in total, or per day or month.
// The zero value is "no quota".
type Quota struct {
	Limit  int64
	Refill Refill
}

// Set reports whether the key has a quota.
func (q Quota) Set() bool { return q.Limit > 0 }

// Period names the counting period that contains t ("" for a quota that
// never refills), and when the next one starts (zero if never).
func (q Quota) Period(t time.Time) (string, time.Time) {
	t = t.UTC()
	switch q.Refill {
	case RefillDaily:
		day := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
		return day.Format("2006-01-02"), day.AddDate(0, 0, 1)
	case RefillMonthly:
		month := time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
		return month.Format("2006-01"), month.AddDate(0, 1, 0)
	}
	return "", time.Time{}
}

// QuotaUsage is how much of its quota a key has used: Used uses in Period.
// It is a counter, not part of the key's content: it changes without a new
// Version, so a cached snapshot's copy may be stale. Management reads
// (Get, List) fill it in fresh.
type QuotaUsage struct {
	Period string
	Used   int64
}

// Remaining is the uses q leaves at time now after usage u.
func (q Quota) Remaining(u QuotaUsage, now time.Time) int64 {
	period, _ := q.Period(now)
	if u.Period != period {
		return q.Limit
	}
	return max(q.Limit-u.Used, 0)
}

// Grants reports whether the key's scopes grant scope s: exactly, or through
// a wildcard ("orders:*" grants every "orders:…" scope, "*" every scope).
// Wildcards never grant an admin scope (see GrantsExactly).
func (k *Key) Grants(s string) bool {
	for _, have := range k.Scopes {
		if have == s {
			return true
		}
		if n := len(have) - 1; n >= 0 && have[n] == '*' && (n == 0 || have[n-1] == ':') &&
			strings.HasPrefix(s, have[:n]) {
			return true
		}
	}
	return false
}

// AllowsIP reports whether the key's IP allow-list admits addr. A key
// without an allow-list admits every address, even none.
func (k *Key) AllowsIP(addr netip.Addr) bool {
	if len(k.AllowedCIDRs) == 0 {
		return true
	}
	addr = addr.Unmap()
	for _, p := range k.AllowedCIDRs {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// HasPrevious reports whether the key has a replaced secret in its grace
// period at now.
func (k *Key) HasPrevious(now time.Time) bool {
	return len(k.PrevHash) > 0 && now.Before(k.PrevExpire)
}

// ClearPrevious ends a rotation's grace period at once.
func (k *Key) ClearPrevious() {
	k.PrevHash, k.PrevStart, k.PrevLast4, k.PrevExpire = nil, "", "", time.Time{}
}

// PrevMasked is the display form of the replaced secret.
func (k *Key) PrevMasked() string { return k.PrevStart + "…" + k.PrevLast4 }
