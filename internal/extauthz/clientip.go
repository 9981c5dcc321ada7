package extauthz

import (
	"net/netip"
	"strconv"
	"time"

	"github.com/keyward/keyward/internal/clientaddr"
	"github.com/keyward/keyward/internal/validate"
)

// clientIP is the address a key's IP allow-list is checked against: the
// peer's own address (Envoy's downstream address, or the connection's for
// forward-auth) or, behind hops trusted proxies, the matching
// X-Forwarded-For entry (clientaddr.Forwarded).
func clientIP(peer string, xff []string, hops int) netip.Addr {
	if hops <= 0 {
		return clientaddr.Parse(peer)
	}
	return clientaddr.Forwarded(xff, hops)
}

// limitHeaders are the rate-limit headers a client sees (the IETF
// RateLimit draft's x- forms, as most gateways send them), and Retry-After
// when refused. Values are whole seconds, rounded up.
func limitHeaders(res *validate.Result, emit func(name, value string)) {
	if res.RetryAfter > 0 {
		emit("retry-after", seconds(res.RetryAfter))
	}
	if res.HasRate {
		emit("x-ratelimit-limit", strconv.FormatInt(res.Rate.Limit, 10))
		emit("x-ratelimit-remaining", strconv.FormatInt(res.Rate.Remaining, 10))
		emit("x-ratelimit-reset", seconds(res.Rate.ResetAfter))
	}
}

func seconds(d time.Duration) string {
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10)
}
