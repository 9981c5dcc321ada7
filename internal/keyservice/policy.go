package keyservice

import (
	"net/netip"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/keys"
)

// Limits on policies.
const (
	maxCIDRs       = 64
	maxRate        = 1_000_000
	minRatePeriod  = time.Second
	maxRatePeriod  = 24 * time.Hour
	maxQuota       = 1_000_000_000_000
	maxGracePeriod = 7 * 24 * time.Hour
	maxTTL         = 100 * 365 * 24 * time.Hour
)

// parseCIDRs checks an IP allow-list and returns it canonical and without
// duplicates. A bare address is a block of one; a block with host bits set
// is refused rather than silently widened or narrowed.
func parseCIDRs(in []string) ([]netip.Prefix, error) {
	if len(in) > maxCIDRs {
		return nil, keys.Invalid("allowed_cidrs", "more than %d blocks", maxCIDRs)
	}
	var out []netip.Prefix
	seen := map[netip.Prefix]bool{}
	for _, s := range in {
		s = strings.TrimSpace(s)
		var p netip.Prefix
		if strings.Contains(s, "/") {
			var err error
			if p, err = netip.ParsePrefix(s); err != nil {
				return nil, keys.Invalid("allowed_cidrs", "%q is not a CIDR block such as 10.0.0.0/8 or 2001:db8::/32", truncate(s))
			}
			if p.Addr().Zone() != "" {
				return nil, keys.Invalid("allowed_cidrs", "%q: zones are not allowed", truncate(s))
			}
			if p.Masked() != p {
				return nil, keys.Invalid("allowed_cidrs", "%q has host bits set; did you mean %s?", truncate(s), p.Masked())
			}
		} else {
			a, err := netip.ParseAddr(s)
			if err != nil || a.Zone() != "" {
				return nil, keys.Invalid("allowed_cidrs", "%q is not an IP address or CIDR block", truncate(s))
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if a := p.Addr(); a.Is4In6() {
			// ::ffff:10.0.0.0/104 is 10.0.0.0/8: clients are compared unmapped.
			if p.Bits() < 96 {
				return nil, keys.Invalid("allowed_cidrs", "%q: an IPv4-mapped block needs at least 96 bits", truncate(s))
			}
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out, nil
}

func cidrStrings(ps []netip.Prefix) []string {
	if len(ps) == 0 {
		return nil
	}
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// parseRateLimit checks a rate limit; nil means none.
func parseRateLimit(in *keywardv1.RateLimit) (keys.RateLimit, error) {
	if in == nil {
		return keys.RateLimit{}, nil
	}
	rl := keys.RateLimit{Limit: in.GetLimit(), Period: time.Second, Burst: in.GetBurst()}
	if rl.Limit < 1 || rl.Limit > maxRate {
		return rl, keys.Invalid("rate_limit.limit", "must be between 1 and %d, got %d", maxRate, rl.Limit)
	}
	if p := in.GetPeriod(); p != nil {
		if err := p.CheckValid(); err != nil {
			return rl, keys.Invalid("rate_limit.period", "%v", err)
		}
		rl.Period = p.AsDuration()
		if rl.Period < minRatePeriod || rl.Period > maxRatePeriod {
			return rl, keys.Invalid("rate_limit.period", "must be between %s and %s, got %s", minRatePeriod, maxRatePeriod, rl.Period)
		}
	}
	if rl.Burst == 0 {
		rl.Burst = rl.Limit
	}
	if rl.Burst < 1 || rl.Burst > maxRate {
		return rl, keys.Invalid("rate_limit.burst", "must be between 1 and %d, got %d", maxRate, rl.Burst)
	}
	return rl, nil
}

// parseQuota checks a quota; nil means none. Its output-only fields are ignored.
func parseQuota(in *keywardv1.Quota) (keys.Quota, error) {
	if in == nil {
		return keys.Quota{}, nil
	}
	q := keys.Quota{Limit: in.GetLimit()}
	if q.Limit < 1 || q.Limit > maxQuota {
		return q, keys.Invalid("quota.limit", "must be between 1 and %d, got %d", int64(maxQuota), q.Limit)
	}
	switch in.GetRefill() {
	case keywardv1.Quota_REFILL_UNSPECIFIED:
		q.Refill = keys.RefillNever
	case keywardv1.Quota_REFILL_DAILY:
		q.Refill = keys.RefillDaily
	case keywardv1.Quota_REFILL_MONTHLY:
		q.Refill = keys.RefillMonthly
	default:
		return q, keys.Invalid("quota.refill", "unknown refill %d", in.GetRefill())
	}
	return q, nil
}

// expiry resolves expire_time or ttl (at most one may be set) against now.
// set is false when neither is.
func expiry(ts *timestamppb.Timestamp, ttl *durationpb.Duration, now time.Time) (t time.Time, set bool, err error) {
	switch {
	case ts != nil && ttl != nil:
		return t, false, keys.Invalid("ttl", "set expire_time or ttl, not both")
	case ttl != nil:
		if err := ttl.CheckValid(); err != nil {
			return t, false, keys.Invalid("ttl", "%v", err)
		}
		d := ttl.AsDuration()
		if d <= 0 || d > maxTTL {
			return t, false, keys.Invalid("ttl", "must be positive and at most %s, got %s", maxTTL, d)
		}
		return now.Add(d).UTC().Truncate(time.Microsecond), true, nil
	case ts != nil:
		t, err = expireTime(ts, now)
		return t, err == nil, err
	}
	return t, false, nil
}

// gracePeriod checks RegenerateKey's grace period; zero means none.
func gracePeriod(in *durationpb.Duration) (time.Duration, error) {
	if in == nil {
		return 0, nil
	}
	if err := in.CheckValid(); err != nil {
		return 0, keys.Invalid("grace_period", "%v", err)
	}
	d := in.AsDuration()
	if d < 0 || d > maxGracePeriod {
		return 0, keys.Invalid("grace_period", "must be between 0 and %s, got %s", maxGracePeriod, d)
	}
	return d, nil
}

func rateLimitProto(rl keys.RateLimit) *keywardv1.RateLimit {
	if !rl.Set() {
		return nil
	}
	return &keywardv1.RateLimit{Limit: rl.Limit, Period: durationpb.New(rl.Period), Burst: rl.Burst}
}

var refills = map[keys.Refill]keywardv1.Quota_Refill{
	keys.RefillNever:   keywardv1.Quota_REFILL_UNSPECIFIED,
	keys.RefillDaily:   keywardv1.Quota_REFILL_DAILY,
	keys.RefillMonthly: keywardv1.Quota_REFILL_MONTHLY,
}

// quotaProto renders k's quota with the uses left at now.
func quotaProto(k *keys.Key, now time.Time) *keywardv1.Quota {
	if !k.Quota.Set() {
		return nil
	}
	_, next := k.Quota.Period(now)
	return &keywardv1.Quota{
		Limit:      k.Quota.Limit,
		Refill:     refills[k.Quota.Refill],
		Remaining:  k.Quota.Remaining(k.QuotaUsage, now),
		RefillTime: timestamp(next),
	}
}

// secretsOf lists the hashes that resolve to k: its secret's and, during a
// rotation's grace period, the replaced one's.
func secretsOf(k *keys.Key) [][]byte {
	if len(k.PrevHash) == 0 {
		return [][]byte{k.Hash}
	}
	return [][]byte{k.Hash, k.PrevHash}
}

// sameSecrets reports whether a and b have the same secrets.
func sameSecrets(a, b *keys.Key) bool {
	return string(a.Hash) == string(b.Hash) && string(a.PrevHash) == string(b.PrevHash)
}

// changesFor is what every hash of before and after resolves to once a
// write from before to after (nil: deleted, at version) commits.
func changesFor(before, after *keys.Key, version int64) []keys.Change {
	var out []keys.Change
	var now [][]byte
	if after != nil {
		now = secretsOf(after)
		for _, h := range now {
			out = append(out, keys.Change{Hash: h, Key: after, Version: version})
		}
	}
	for _, h := range secretsOf(before) {
		gone := true
		for _, n := range now {
			if string(n) == string(h) {
				gone = false
			}
		}
		if gone {
			out = append(out, keys.Change{Hash: h, Version: version})
		}
	}
	return out
}
