package extauthz

import (
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/validate"
)

// clientIP is the address a key's IP allow-list is checked against. With no
// trusted proxies it is the peer's own address (Envoy's downstream address,
// or the connection's for forward-auth). Behind hops trusted proxies that
// each append the address they received from to X-Forwarded-For, it is the
// hops-th entry from the right: entries further left were written by the
// client and prove nothing. A header too short for hops gives no address,
// which an allow-list refuses.
func clientIP(peer string, xff []string, hops int) netip.Addr {
	if hops <= 0 {
		return parseIP(peer)
	}
	for i := len(xff) - 1; i >= 0; i-- {
		v := xff[i]
		for v != "" {
			var entry string
			if j := strings.LastIndexByte(v, ','); j >= 0 {
				entry, v = v[j+1:], v[:j]
			} else {
				entry, v = v, ""
			}
			if hops--; hops == 0 {
				return parseIP(strings.TrimSpace(entry))
			}
		}
	}
	return netip.Addr{}
}

// parseIP reads an address, with or without a port ("10.0.0.1:5000",
// "[2001:db8::1]:443"); anything else is no address.
func parseIP(s string) netip.Addr {
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return a.Unmap()
	}
	if ap, err := netip.ParseAddrPort(s); err == nil && ap.Addr().Zone() == "" {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
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
