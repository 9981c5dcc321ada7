package store

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"net/netip"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/keys"
)

// Normalize gives k the form every read returns: UTC microsecond times (the
// precision both backends keep), non-nil Scopes and Metadata, nil
// AllowedCIDRs, PrevHash and Sealed when empty, and a rate limit period in
// whole milliseconds (the policy column's unit).
func Normalize(k *keys.Key) {
	if k.Scopes == nil {
		k.Scopes = []string{}
	}
	if k.Metadata == nil {
		k.Metadata = map[string]string{}
	}
	if len(k.AllowedCIDRs) == 0 {
		k.AllowedCIDRs = nil
	}
	if len(k.PrevHash) == 0 {
		k.PrevHash = nil
	}
	if len(k.Sealed) == 0 {
		k.Sealed = nil
	}
	k.RateLimit.Period = k.RateLimit.Period.Truncate(time.Millisecond)
	k.CreateTime = Micro(k.CreateTime)
	k.UpdateTime = Micro(k.UpdateTime)
	k.ExpireTime = Micro(k.ExpireTime)
	k.LastUsed = Micro(k.LastUsed)
	k.PrevExpire = Micro(k.PrevExpire)
}

// Micro is t as stored: UTC, whole microseconds; the zero time stays zero.
func Micro(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	t = t.UTC().Truncate(time.Microsecond)
	if t.IsZero() { // within a microsecond of year 1: as good as unset
		return time.Time{}
	}
	return t
}

// policy is the JSON of the policy column, shared by both backends. Members
// of unset (zero) policies are omitted, so a key without policies is {}.
// Refill is spelled out rather than numbered, so the stored form does not
// depend on the order of the keys.Refill constants.
type policy struct {
	AllowedCIDRs []string         `json:"allowed_cidrs,omitempty"`
	RateLimit    *rateLimitPolicy `json:"rate_limit,omitempty"`
	Quota        *quotaPolicy     `json:"quota,omitempty"`
}

type rateLimitPolicy struct {
	Limit    int64 `json:"limit"`
	PeriodMS int64 `json:"period_ms"`
	Burst    int64 `json:"burst"`
}

type quotaPolicy struct {
	Limit  int64  `json:"limit"`
	Refill string `json:"refill"`
}

var refillNames = map[keys.Refill]string{
	keys.RefillNever:   "never",
	keys.RefillDaily:   "daily",
	keys.RefillMonthly: "monthly",
}

// EncodePolicy is the policy column's value for k: its AllowedCIDRs,
// RateLimit and Quota as JSON. An invalid prefix or an unknown refill is a
// *keys.InvalidArgumentError.
func EncodePolicy(k *keys.Key) (string, error) {
	var p policy
	for i, c := range k.AllowedCIDRs {
		if !c.IsValid() {
			return "", keys.Invalid("allowed_cidrs", "entry %d is not a valid prefix", i)
		}
		p.AllowedCIDRs = append(p.AllowedCIDRs, c.String())
	}
	if k.RateLimit != (keys.RateLimit{}) {
		p.RateLimit = &rateLimitPolicy{
			Limit: k.RateLimit.Limit, PeriodMS: k.RateLimit.Period.Milliseconds(), Burst: k.RateLimit.Burst,
		}
	}
	if k.Quota != (keys.Quota{}) {
		refill, ok := refillNames[k.Quota.Refill]
		if !ok {
			return "", keys.Invalid("quota", "unknown refill %d", k.Quota.Refill)
		}
		p.Quota = &quotaPolicy{Limit: k.Quota.Limit, Refill: refill}
	}
	b, err := json.Marshal(p)
	if err != nil {
		return "", fmt.Errorf("encode policy: %w", err)
	}
	return string(b), nil
}

// DecodePolicy sets k's AllowedCIDRs, RateLimit and Quota from a policy
// column written by EncodePolicy. Members it does not know are ignored.
func DecodePolicy(data []byte, k *keys.Key) error {
	var p policy
	if err := json.Unmarshal(data, &p); err != nil {
		return fmt.Errorf("decode policy: %w", err)
	}
	k.AllowedCIDRs = nil
	if len(p.AllowedCIDRs) > 0 {
		k.AllowedCIDRs = make([]netip.Prefix, len(p.AllowedCIDRs))
		for i, c := range p.AllowedCIDRs {
			var err error
			if k.AllowedCIDRs[i], err = netip.ParsePrefix(c); err != nil {
				return fmt.Errorf("decode policy: allowed_cidrs: %w", err)
			}
		}
	}
	k.RateLimit = keys.RateLimit{}
	if r := p.RateLimit; r != nil {
		k.RateLimit = keys.RateLimit{Limit: r.Limit, Period: time.Duration(r.PeriodMS) * time.Millisecond, Burst: r.Burst}
	}
	k.Quota = keys.Quota{}
	if q := p.Quota; q != nil {
		k.Quota.Limit = q.Limit
		found := false
		for refill, name := range refillNames {
			if name == q.Refill {
				k.Quota.Refill, found = refill, true
			}
		}
		if !found {
			return fmt.Errorf("decode policy: unknown quota refill %q", q.Refill)
		}
	}
	return nil
}

// CheckQuota is the validation ConsumeQuota's q must pass in every backend:
// a quota that is set, with a known refill.
func CheckQuota(q keys.Quota) error {
	if !q.Set() {
		return keys.Invalid("quota", "limit must be positive, got %d", q.Limit)
	}
	if _, ok := refillNames[q.Refill]; !ok {
		return keys.Invalid("quota", "unknown refill %d", q.Refill)
	}
	return nil
}

// Migration is one embedded schema step.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations reads migrations/NNNN_what.sql from fsys in version order.
func Migrations(fsys fs.FS) ([]Migration, error) {
	names, err := fs.Glob(fsys, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []Migration
	seen := map[int]string{}
	for _, p := range names {
		name := path.Base(p)
		num, _, _ := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if err != nil || v < 1 {
			return nil, fmt.Errorf("migration %s: name must start with a positive number", name)
		}
		if other, ok := seen[v]; ok {
			return nil, fmt.Errorf("migrations %s and %s share version %d", other, name, v)
		}
		seen[v] = name
		body, err := fs.ReadFile(fsys, p)
		if err != nil {
			return nil, err
		}
		ms = append(ms, Migration{Version: v, Name: name, SQL: string(body)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	return ms, nil
}
