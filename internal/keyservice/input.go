package keyservice

import (
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keyward/keyward/internal/keys"
)

// Limits on what a key may carry. They keep rows and cache entries small and
// bound what one request can make the server store.
const (
	maxNameLen        = 200
	maxDescriptionLen = 2000
	maxScopes         = 64
	maxScopeLen       = 128
	maxMetadata       = 64
	maxMetaKeyLen     = 64
	maxMetaValueLen   = 512
	maxIDLen          = 64
	maxQueryLen       = 256
	maxRequestIDLen   = 128
	defaultPageSize   = 50
	maxPageSize       = 1000
)

var (
	scopePattern   = regexp.MustCompile(`^[A-Za-z0-9:._*/-]+$`)
	metaKeyPattern = regexp.MustCompile(`^[A-Za-z0-9._/-]+$`)
)

func checkID(id string) error {
	switch {
	case id == "":
		return keys.Invalid("key_id", "required")
	case len(id) > maxIDLen:
		return keys.Invalid("key_id", "longer than %d characters", maxIDLen)
	}
	return nil
}

func checkText(field, v string, required bool, max int) error {
	switch {
	case !utf8.ValidString(v):
		return keys.Invalid(field, "not valid UTF-8")
	case required && strings.TrimSpace(v) == "":
		return keys.Invalid(field, "required")
	case utf8.RuneCountInString(v) > max:
		return keys.Invalid(field, "longer than %d characters", max)
	}
	for _, r := range v {
		if unicode.IsControl(r) && (field == "display_name" || r != '\n' && r != '\t') {
			return keys.Invalid(field, "contains control characters")
		}
	}
	return nil
}

// normScopes checks scopes and drops duplicates, keeping the first occurrence's order.
func normScopes(in []string) ([]string, error) {
	if len(in) > maxScopes {
		return nil, keys.Invalid("scopes", "more than %d scopes", maxScopes)
	}
	out := make([]string, 0, len(in))
	seen := make(map[string]bool, len(in))
	for _, s := range in {
		if len(s) == 0 || len(s) > maxScopeLen || !scopePattern.MatchString(s) {
			return nil, keys.Invalid("scopes", "scope %q: want 1-%d characters of A-Z a-z 0-9 : . _ * / -", truncate(s), maxScopeLen)
		}
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out, nil
}

func checkMetadata(m map[string]string) error {
	if len(m) > maxMetadata {
		return keys.Invalid("metadata", "more than %d entries", maxMetadata)
	}
	for k, v := range m {
		if len(k) == 0 || len(k) > maxMetaKeyLen || !metaKeyPattern.MatchString(k) {
			return keys.Invalid("metadata", "key %q: want 1-%d characters of A-Z a-z 0-9 . _ / -", truncate(k), maxMetaKeyLen)
		}
		if !utf8.ValidString(v) || utf8.RuneCountInString(v) > maxMetaValueLen {
			return keys.Invalid("metadata", "value of %q: want valid UTF-8 of at most %d characters", k, maxMetaValueLen)
		}
	}
	return nil
}

// expireTime converts an optional expiry, which must lie in the future.
func expireTime(ts *timestamppb.Timestamp, now time.Time) (time.Time, error) {
	if ts == nil {
		return time.Time{}, nil
	}
	if err := ts.CheckValid(); err != nil {
		return time.Time{}, keys.Invalid("expire_time", "%v", err)
	}
	t := ts.AsTime().UTC().Truncate(time.Microsecond)
	if !t.After(now) {
		return time.Time{}, keys.Invalid("expire_time", "must be in the future (use DisableKey to stop a key now)")
	}
	return t, nil
}

// truncate shortens user input echoed in an error message.
func truncate(s string) string {
	if r := []rune(s); len(r) > 40 {
		return string(r[:40]) + "…"
	}
	return s
}

// pageSize applies AIP-158's rules to a requested page size: default when
// unset, capped at the maximum, negative refused.
func pageSize(n int32) (int, error) {
	switch {
	case n < 0:
		return 0, keys.Invalid("page_size", "must not be negative")
	case n == 0:
		return defaultPageSize, nil
	case n > maxPageSize:
		return maxPageSize, nil
	}
	return int(n), nil
}
