// Package clientaddr finds a client's address behind proxies, the one way
// every surface does it: IP allow-lists (Check, forward-auth), the throttle
// of failed validations and the audit trail's source address.
package clientaddr

import (
	"net/netip"
	"strings"
)

// Parse reads an address with or without a port ("10.0.0.1:5000",
// "[2001:db8::1]:443"), IPv4-mapped IPv6 as IPv4. Anything else, and an
// address with a zone, is no address (the zero Addr).
func Parse(s string) netip.Addr {
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return a.Unmap()
	}
	if ap, err := netip.ParseAddrPort(s); err == nil && ap.Addr().Zone() == "" {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// Forwarded is the n-th entry (n ≥ 1) from the right of X-Forwarded-For,
// given as the header's values in order. Each trusted proxy appends the
// address it received from, so behind n of them the n-th entry from the right
// is the client; entries further left were written by the client and prove
// nothing. Too few entries, or an entry that is not an address, give no
// address. Values that are not printable ASCII are skipped, as HTTP
// front-ends (the REST gateway among them) drop them.
func Forwarded(values []string, n int) netip.Addr {
	if n < 1 {
		return netip.Addr{}
	}
	for i := len(values) - 1; i >= 0; i-- {
		v := values[i]
		if !printable(v) {
			continue
		}
		for v != "" {
			var entry string
			if j := strings.LastIndexByte(v, ','); j >= 0 {
				entry, v = v[j+1:], v[:j]
			} else {
				entry, v = v, ""
			}
			if n--; n == 0 {
				return Parse(strings.TrimSpace(entry))
			}
		}
	}
	return netip.Addr{}
}

func printable(v string) bool {
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			return false
		}
	}
	return true
}
