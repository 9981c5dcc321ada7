package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
)

// maxSecretLen bounds what is read as a key or query: a key is 57 bytes; a
// runaway pipe should not be read into memory whole.
const maxSecretLen = 4096

// keyValues sets k's fields from the --scopes, --metadata, --expire-time or
// --ttl and policy flags. Empty values leave a field unset, which update
// sends to clear it.
func (c *keysCmd) keyValues(k *keywardv1.Key) error {
	given := c.given()
	k.Scopes = splitComma(c.scopes)
	var err error
	if k.Metadata, err = parseMetadata(c.metadata); err != nil {
		return err
	}
	if given["expire-time"] && given["ttl"] {
		return usageError("give --expire-time or --ttl, not both")
	}
	if k.ExpireTime, err = parseTime("--expire-time", c.expireTime); err != nil {
		return err
	}
	if c.ttl != "" {
		d, err := parseDuration("--ttl", c.ttl)
		if err != nil {
			return err
		}
		if d <= 0 {
			return usageError("--ttl %q: want a positive duration, e.g. 90d", c.ttl)
		}
		k.Ttl = durationpb.New(d)
	}
	k.AllowedCidrs = splitComma(c.allowedCIDRs)
	if k.RateLimit, err = parseRateLimit(c.rateLimit, c.burst, given["burst"]); err != nil {
		return err
	}
	if k.Quota, err = parseQuota(c.quota, c.quotaRefill, given["quota-refill"]); err != nil {
		return err
	}
	return nil
}

// parseRateLimit reads --rate-limit N[/PERIOD] and --burst; "" is no rate
// limit. A period is a duration or just its unit: 100/1m, 100/m, 5/1d.
// Without one the server's default (a second) applies.
func parseRateLimit(s string, burst int64, burstGiven bool) (*keywardv1.RateLimit, error) {
	if s == "" {
		if burstGiven {
			return nil, usageError("--burst needs --rate-limit: a rate limit is set whole")
		}
		return nil, nil
	}
	n, per, hasPeriod := strings.Cut(strings.TrimSpace(s), "/")
	limit, err := strconv.ParseInt(n, 10, 64)
	if err != nil || limit < 1 {
		return nil, usageError("--rate-limit %q: want N or N/PERIOD with N a positive number, e.g. 100/1s or 1000/1m", s)
	}
	rl := &keywardv1.RateLimit{Limit: limit}
	if hasPeriod {
		if per != "" && (per[0] < '0' || per[0] > '9') {
			per = "1" + per // "100/m": per minute
		}
		d, err := parseDuration("--rate-limit", per)
		if err != nil {
			return nil, err
		}
		if d <= 0 {
			return nil, usageError("--rate-limit %q: the period must be positive", s)
		}
		rl.Period = durationpb.New(d)
	}
	if burst < 0 {
		return nil, usageError("--burst %d: want a positive number", burst)
	}
	rl.Burst = burst
	return rl, nil
}

// quotaRefills are --quota-refill's values.
var quotaRefills = map[string]keywardv1.Quota_Refill{
	"":        keywardv1.Quota_REFILL_UNSPECIFIED,
	"never":   keywardv1.Quota_REFILL_UNSPECIFIED,
	"daily":   keywardv1.Quota_REFILL_DAILY,
	"monthly": keywardv1.Quota_REFILL_MONTHLY,
}

// parseQuota reads --quota N and --quota-refill; "" is no quota.
func parseQuota(s, refill string, refillGiven bool) (*keywardv1.Quota, error) {
	if s == "" {
		if refillGiven {
			return nil, usageError("--quota-refill needs --quota: a quota is set whole")
		}
		return nil, nil
	}
	limit, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || limit < 1 {
		return nil, usageError("--quota %q: want a positive number of uses", s)
	}
	r, ok := quotaRefills[strings.ToLower(strings.TrimSpace(refill))]
	if !ok {
		return nil, usageError("--quota-refill %q: want never, daily or monthly", refill)
	}
	return &keywardv1.Quota{Limit: limit, Refill: r}, nil
}

// parseDuration is time.ParseDuration that also reads a leading number of
// days, as in 90d or 1d12h: key lifetimes are counted in days.
func parseDuration(flagName, s string) (time.Duration, error) {
	bad := usageError("%s %q: want a duration such as 90d, 36h, 1d12h or 30m", flagName, s)
	in := strings.TrimSpace(s)
	var days int64
	if i := strings.IndexByte(in, 'd'); i > 0 {
		n, err := strconv.ParseInt(in[:i], 10, 64)
		if err != nil || n < 0 || n > maxDays {
			return 0, bad
		}
		days, in = n, in[i+1:]
		if in == "" {
			return time.Duration(days) * 24 * time.Hour, nil
		}
	}
	d, err := time.ParseDuration(in)
	whole := time.Duration(days) * 24 * time.Hour
	if err != nil || (days > 0 && (d < 0 || d > math.MaxInt64-whole)) {
		return 0, bad
	}
	return whole + d, nil
}

// maxDays keeps a day count clear of time.Duration's range (292 years).
const maxDays = 100 * 366

// parseTime reads an RFC 3339 flag; "" is unset.
func parseTime(flagName, s string) (*timestamppb.Timestamp, error) {
	if s == "" {
		return nil, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return nil, usageError("%s %q: want RFC 3339, e.g. 2030-01-31T00:00:00Z", flagName, s)
	}
	return timestamppb.New(t), nil
}

// looksLikeSecret tells a pasted secret (kw_live_…) from a key id (key_…),
// so that report-leak can refuse one given where an id belongs.
func looksLikeSecret(s string) bool {
	return strings.HasPrefix(strings.TrimSpace(s), "kw_")
}

// splitComma splits a comma-separated flag, dropping spaces and empty items.
func splitComma(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// parseMetadata reads "k=v,k2=v2". Values may contain "=", not ",".
func parseMetadata(s string) (map[string]string, error) {
	items := splitComma(s)
	if len(items) == 0 {
		return nil, nil
	}
	md := make(map[string]string, len(items))
	for _, item := range items {
		k, v, ok := strings.Cut(item, "=")
		if k = strings.TrimSpace(k); !ok || k == "" {
			return nil, usageError("--metadata %q: want key=value pairs separated by commas", item)
		}
		if _, dup := md[k]; dup {
			return nil, usageError("--metadata: %q is given twice", k)
		}
		md[k] = strings.TrimSpace(v)
	}
	return md, nil
}

// readSecret reads the first line of r, e.g. a key piped into stdin. The
// value is never echoed in an error.
func readSecret(r io.Reader, from string) (string, error) {
	if r == nil {
		return "", usageError("nothing to read from %s", from)
	}
	line, err := bufio.NewReaderSize(io.LimitReader(r, maxSecretLen+1), maxSecretLen+1).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read %s: %w", from, err)
	}
	if len(line) > maxSecretLen {
		return "", usageError("%s: first line longer than %d bytes", from, maxSecretLen)
	}
	return strings.TrimSpace(line), nil
}

func readSecretFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", usageError("--key-file: %v", err)
	}
	defer f.Close()
	return readSecret(f, path)
}
