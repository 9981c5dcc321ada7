package extauthz

import (
	"net/http"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/keys"
)

func TestClientIP(t *testing.T) {
	for _, tc := range []struct {
		peer string
		xff  []string
		hops int
		want string // "" for no address
	}{
		{"10.0.0.7", nil, 0, "10.0.0.7"},
		{"192.0.2.1:1234", nil, 0, "192.0.2.1"},
		{"[2001:db8::1]:443", nil, 0, "2001:db8::1"},
		{"::ffff:10.0.0.1", nil, 0, "10.0.0.1"},
		{"10.0.0.7", []string{"203.0.113.9"}, 0, "10.0.0.7"},                     // no trusted proxy: XFF is the client's word
		{"10.0.0.7", []string{"1.1.1.1, 203.0.113.9"}, 1, "203.0.113.9"},         // nginx appended the client's address
		{"10.0.0.7", []string{"1.1.1.1, 203.0.113.9"}, 2, "1.1.1.1"},             // two proxies
		{"10.0.0.7", []string{"1.1.1.1", "203.0.113.9, 10.1.1.1"}, 3, "1.1.1.1"}, // several header lines
		{"10.0.0.7", []string{"203.0.113.9"}, 2, ""},                             // too few entries: no address
		{"10.0.0.7", []string{"garbage"}, 1, ""},
		{"", nil, 0, ""},
		{"fe80::1%eth0", nil, 0, ""},
	} {
		got := clientIP(tc.peer, tc.xff, tc.hops)
		want := netip.Addr{}
		if tc.want != "" {
			want = netip.MustParseAddr(tc.want)
		}
		if got != want {
			t.Errorf("clientIP(%q, %q, %d) = %v, want %v", tc.peer, tc.xff, tc.hops, got, want)
		}
	}
}

func TestIPAllowListAtTheProxy(t *testing.T) {
	w := newWorld(t)
	secret := w.st.add(t, &keys.Key{ID: "key_IP", Environment: "live", State: keys.StateActive,
		AllowedCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}})
	a := w.authz(t, Options{})
	// envoyRequest's source address is 10.0.0.7.
	if r := check(t, a, envoyRequest("/", map[string]string{"x-api-key": secret}, nil)); r.status != 200 {
		t.Fatalf("Check from an allowed address: %+v", r)
	}
	req := envoyRequest("/", map[string]string{"x-api-key": secret}, nil)
	req.Attributes.Source.Address.GetSocketAddress().Address = "10.0.1.7"
	if r := check(t, a, req); r.status != 403 || r.reason != "REASON_IP_NOT_ALLOWED" {
		t.Fatalf("Check from another address: %+v", r)
	}
	// Without trusted hops a client's X-Forwarded-For changes nothing.
	req = envoyRequest("/", map[string]string{"x-api-key": secret, "x-forwarded-for": "10.0.0.9"}, nil)
	req.Attributes.Source.Address.GetSocketAddress().Address = "10.0.1.7"
	if r := check(t, a, req); r.status != 403 {
		t.Fatalf("a spoofed X-Forwarded-For was believed: %+v", r)
	}
	// With one trusted hop, the last entry is the client.
	behind := w.authz(t, Options{TrustedProxyHops: 1})
	if r := check(t, behind, req); r.status != 200 {
		t.Fatalf("Check behind a trusted proxy: %+v", r)
	}
	// Strict mode does not tell a leaked key's holder that it works elsewhere.
	strict := w.authz(t, Options{Strict: true})
	req = envoyRequest("/", map[string]string{"x-api-key": secret}, nil)
	req.Attributes.Source = nil
	if r := check(t, strict, req); r.status != 401 || r.reason != "REASON_NOT_FOUND" {
		t.Fatalf("strict Check without an address: %+v", r)
	}

	// forward-auth: httptest's peer is 192.0.2.1, so only the trusted hop helps.
	hdr := http.Header{"X-Api-Key": {secret}, "X-Forwarded-For": {"198.51.100.1, 10.0.0.3"}}
	if r := forward(t, a, "GET", "/v1/auth", hdr); r.status != 403 || r.reason != "REASON_IP_NOT_ALLOWED" {
		t.Fatalf("forward-auth from the proxy's address: %+v", r)
	}
	if r := forward(t, behind, "GET", "/v1/auth", hdr); r.status != 200 {
		t.Fatalf("forward-auth behind a trusted proxy: %+v", r)
	}
}

func TestRateLimitAtTheProxy(t *testing.T) {
	w := newWorld(t)
	secret := w.st.add(t, &keys.Key{ID: "key_RL", Environment: "live", State: keys.StateActive,
		RateLimit: keys.RateLimit{Limit: 2, Period: time.Minute, Burst: 2}})
	a := w.authz(t, Options{})
	req := envoyRequest("/", map[string]string{"x-api-key": secret}, nil)
	r := check(t, a, req)
	if r.status != 200 || r.header["x-ratelimit-limit"] != "2" || r.header["x-ratelimit-remaining"] != "1" {
		t.Fatalf("first Check: %+v", r)
	}
	check(t, a, req)
	r = check(t, a, req)
	if r.status != 429 || r.reason != "REASON_RATE_LIMITED" {
		t.Fatalf("third Check: %+v", r)
	}
	if ra, err := strconv.Atoi(r.header["retry-after"]); err != nil || ra < 1 || ra > 30 {
		t.Fatalf("retry-after %q, want the 30 s emission interval or less", r.header["retry-after"])
	}
	if r.header["x-ratelimit-remaining"] != "0" || r.header["x-ratelimit-reset"] == "" {
		t.Fatalf("x-ratelimit headers of a refusal: %v", r.header)
	}
	// forward-auth shares the same limit (same verifier, same key).
	f := forward(t, a, "GET", "/v1/auth", http.Header{"X-Api-Key": {secret}})
	if f.status != 429 || f.header["retry-after"] == "" || f.header["x-ratelimit-limit"] != "2" {
		t.Fatalf("forward-auth: %+v", f)
	}
}
