package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/testenv"
)

// Key policies (TTL, IP allow-lists, rate limits, quotas, rotation with a
// grace period) against real `keyward serve` processes: over REST as
// grpc-gateway renders them, over Envoy's Check and forward-auth, and across
// instances sharing one Postgres and one Redis.

const (
	reasonValid       = keywardv1.ValidateResponse_REASON_VALID
	reasonIPRefused   = keywardv1.ValidateResponse_REASON_IP_NOT_ALLOWED
	reasonRateLimited = keywardv1.ValidateResponse_REASON_RATE_LIMITED
	reasonUsage       = keywardv1.ValidateResponse_REASON_USAGE_EXCEEDED
	// msgLimiterDown is what a Fallback logs when Redis fails and it starts
	// enforcing limits per instance.
	msgLimiterDown = "rate limiter unavailable"
)

// --- REST ---

// TestPolicyREST drives policies through the REST gateway with plain JSON,
// as a client without the protos would: lowerCamelCase names, int64 as
// strings, durations as "3600s", enums by name.
func TestPolicyREST(t *testing.T) {
	t.Parallel()
	for _, mode := range storeModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			testPolicyREST(t, startServer(t, t.TempDir(), mode.dsn(t)))
		})
	}
}

func testPolicyREST(t *testing.T, s *server) {
	unique := randomName(t)
	before := time.Now()
	key, secret := s.createKey(t, `{
		"displayName": "policies `+unique+`",
		"ttl": "3600s",
		"allowedCidrs": ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "10.0.0.0/8"],
		"rateLimit": {"limit": 100, "period": "60s"},
		"quota": {"limit": "500", "refill": "REFILL_DAILY"}
	}`)
	after := time.Now()
	id := keyID(key)
	path := "/v1/keys/" + id

	t.Run("create response", func(t *testing.T) {
		exp := jsonTime(t, "expireTime", key["expireTime"])
		if exp.Before(before.Add(time.Hour-time.Second)) || exp.After(after.Add(time.Hour+time.Second)) {
			t.Errorf("ttl 3600s: expireTime %v, want an hour after the create (%v)", exp, before)
		}
		if ttl, present := key["ttl"]; present && ttl != nil {
			t.Errorf("ttl is input only, but the key shows ttl %v", ttl)
		}
		wantJSON(t, "allowedCidrs (canonical, deduplicated)", key["allowedCidrs"],
			[]any{"10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"})
		wantJSON(t, "rateLimit (burst defaults to limit)", key["rateLimit"],
			map[string]any{"limit": "100", "period": "60s", "burst": "100"})
		q, _ := key["quota"].(map[string]any)
		if q["limit"] != "500" || q["remaining"] != "500" || q["refill"] != "REFILL_DAILY" {
			t.Errorf("quota %v, want limit and remaining \"500\", refill REFILL_DAILY", key["quota"])
		}
		y, m, d := after.UTC().Date()
		if rt := jsonTime(t, "quota.refillTime", q["refillTime"]); !rt.Equal(time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC)) {
			t.Errorf("quota.refillTime %v, want the next 00:00 UTC", rt)
		}
		if key["previousMaskedKey"] != "" || key["previousKeyExpireTime"] != nil {
			t.Errorf("a new key shows a previous secret: %v %v", key["previousMaskedKey"], key["previousKeyExpireTime"])
		}
		got := s.call(t, "GET", path, "", true).want(t, http.StatusOK)
		for _, f := range []string{"expireTime", "allowedCidrs", "rateLimit", "quota"} {
			if !reflect.DeepEqual(got[f], key[f]) {
				t.Errorf("GET %s = %v, want what create returned: %v", f, got[f], key[f])
			}
		}
	})

	t.Run("bad allowedCidrs", func(t *testing.T) {
		for _, tc := range []struct{ cidr, inMessage string }{
			{"10.0.0.0/33", "allowed_cidrs"},
			{"10.0.0.1/8", "did you mean 10.0.0.0/8"},
			{"example.com", "allowed_cidrs"},
		} {
			r := s.call(t, "PATCH", path+"?update_mask=allowed_cidrs", `{"allowedCidrs": ["`+tc.cidr+`"]}`, true)
			m := r.want(t, http.StatusBadRequest)
			assertError(t, r, m, 3)
			if msg, _ := m["message"].(string); !strings.Contains(msg, tc.inMessage) {
				t.Errorf("PATCH allowedCidrs [%q]: message %q does not say %q", tc.cidr, msg, tc.inMessage)
			}
		}
		got := s.call(t, "GET", path, "", true).want(t, http.StatusOK)
		if !reflect.DeepEqual(got["allowedCidrs"], key["allowedCidrs"]) {
			t.Errorf("refused PATCHes changed allowedCidrs to %v", got["allowedCidrs"])
		}
		// A good one is taken.
		up := s.call(t, "PATCH", path+"?update_mask=allowed_cidrs", `{"allowedCidrs": ["10.0.0.0/8", "2001:db8::/32", "192.0.2.0/24"]}`, true).
			want(t, http.StatusOK)
		wantJSON(t, "PATCH allowedCidrs", up["allowedCidrs"], []any{"10.0.0.0/8", "2001:db8::/32", "192.0.2.0/24"})
		if !reflect.DeepEqual(up["rateLimit"], key["rateLimit"]) || !reflect.DeepEqual(up["expireTime"], key["expireTime"]) {
			t.Errorf("update_mask=allowed_cidrs changed other policies: %v %v", up["rateLimit"], up["expireTime"])
		}
	})

	t.Run("PATCH without update_mask", func(t *testing.T) {
		// Over REST the mask defaults to the fields present in the body.
		k, _ := s.createKey(t, `{"displayName": "implicit mask `+unique+`"}`)
		p := "/v1/keys/" + keyID(k)
		for _, tc := range []struct {
			body, field string
			want        any
		}{
			{`{"allowedCidrs": ["10.0.0.0/8"]}`, "allowedCidrs", []any{"10.0.0.0/8"}},
			{`{"rateLimit": {"limit": 7, "period": "60s"}}`, "rateLimit", map[string]any{"limit": "7", "period": "60s", "burst": "7"}},
			{`{"quota": {"limit": "3"}}`, "quota", map[string]any{"limit": "3", "refill": "REFILL_UNSPECIFIED", "remaining": "3", "refillTime": nil}},
			{`{"ttl": "60s"}`, "", nil},
		} {
			r := s.call(t, "PATCH", p, tc.body, true)
			if r.Status != http.StatusOK {
				t.Errorf("PATCH %s %s: %d %s", p, tc.body, r.Status, r.Body)
				continue
			}
			got := r.want(t, http.StatusOK)
			if tc.field != "" {
				wantJSON(t, "PATCH "+tc.body, got[tc.field], tc.want)
			} else if got["expireTime"] == nil {
				t.Errorf("PATCH %s: no expireTime", tc.body)
			}
		}
	})

	validate := func(t *testing.T, body string) map[string]any {
		t.Helper()
		return s.call(t, "POST", "/v1/keys:validate", body, false).want(t, http.StatusOK)
	}
	withIP := func(secret, ip string) string {
		b, _ := json.Marshal(map[string]string{"key": secret, "clientIp": ip})
		return string(b)
	}

	t.Run("validate clientIp", func(t *testing.T) {
		prevUses := int64(-1)
		for _, ip := range []string{"10.1.2.3", "192.0.2.200", "::ffff:10.9.9.9", "2001:db8::5"} {
			v := validate(t, withIP(secret, ip))
			if v["valid"] != true || v["reason"] != "REASON_VALID" {
				t.Fatalf("clientIp %s: valid %v, reason %v, want REASON_VALID", ip, v["valid"], v["reason"])
			}
			if k, _ := v["key"].(map[string]any); keyID(k) != id {
				t.Errorf("clientIp %s: key %v", ip, v["key"])
			}
			rl, _ := v["rateLimit"].(map[string]any)
			if rl["limit"] != "100" || rl["remaining"] == nil || rl["resetAfter"] == nil {
				t.Errorf("clientIp %s: rateLimit %v, want limit, remaining, resetAfter", ip, v["rateLimit"])
			}
			uses := jsonInt(t, "remainingUses", v["remainingUses"])
			if prevUses >= 0 && uses != prevUses-1 {
				t.Errorf("clientIp %s: remainingUses %d after %d, want one less", ip, uses, prevUses)
			}
			prevUses = uses
			if k, _ := v["key"].(map[string]any); jsonInt(t, "key.quota.remaining", k["quota"].(map[string]any)["remaining"]) != uses {
				t.Errorf("clientIp %s: key.quota %v, want remaining %d like remainingUses", ip, k["quota"], uses)
			}
			if v["retryAfter"] != nil {
				t.Errorf("clientIp %s: an accepted request has retryAfter %v", ip, v["retryAfter"])
			}
		}
		for _, ip := range []string{"11.0.0.1", "192.0.3.1", "2001:db9::1", "127.0.0.1"} {
			v := validate(t, withIP(secret, ip))
			assertRefused(t, v, "REASON_IP_NOT_ALLOWED")
			if _, present := v["remainingUses"]; present {
				t.Errorf("clientIp %s: a refusal has remainingUses %v", ip, v["remainingUses"])
			}
		}
		// No address at all: an allow-list refuses.
		assertRefused(t, s.validate(t, secret), "REASON_IP_NOT_ALLOWED")
		r := s.call(t, "POST", "/v1/keys:validate", withIP(secret, "nope"), false)
		m := r.want(t, http.StatusBadRequest)
		assertError(t, r, m, 3)
		if msg, _ := m["message"].(string); !strings.Contains(msg, "client_ip") {
			t.Errorf("clientIp \"nope\": message %q does not name client_ip", msg)
		}
		// Refusals for the address used none of the quota.
		if v := validate(t, withIP(secret, "10.0.0.1")); jsonInt(t, "remainingUses", v["remainingUses"]) != prevUses-1 {
			t.Errorf("remainingUses %v after refusals, want %d: a refusal used the quota", v["remainingUses"], prevUses-1)
		}
	})

	t.Run("regenerate with gracePeriod", func(t *testing.T) {
		r := s.call(t, "POST", path+":regenerate", `{"gracePeriod": "691200s"}`, true)
		m := r.want(t, http.StatusBadRequest)
		assertError(t, r, m, 3)
		if msg, _ := m["message"].(string); !strings.Contains(msg, "grace_period") {
			t.Errorf("gracePeriod 8 days: message %q does not name grace_period", msg)
		}
		if v := validate(t, withIP(secret, "10.0.0.1")); v["valid"] != true {
			t.Fatalf("a refused regenerate changed the secret: %v", v)
		}

		t0 := time.Now()
		m = s.call(t, "POST", path+":regenerate", `{"gracePeriod": "3600s"}`, true).want(t, http.StatusOK)
		k, _ := m["key"].(map[string]any)
		newSecret, _ := m["secret"].(string)
		if newSecret == "" || newSecret == secret {
			t.Fatalf("regenerate: secret %q", newSecret)
		}
		if k["previousMaskedKey"] != key["maskedKey"] || k["maskedKey"] == key["maskedKey"] {
			t.Errorf("regenerate: maskedKey %v, previousMaskedKey %v; want the old %v as previous",
				k["maskedKey"], k["previousMaskedKey"], key["maskedKey"])
		}
		end := jsonTime(t, "previousKeyExpireTime", k["previousKeyExpireTime"])
		if end.Before(t0.Add(time.Hour-time.Second)) || end.After(time.Now().Add(time.Hour+time.Second)) {
			t.Errorf("previousKeyExpireTime %v, want an hour from now", end)
		}
		got := s.call(t, "GET", path, "", true).want(t, http.StatusOK)
		if got["previousMaskedKey"] != key["maskedKey"] || !reflect.DeepEqual(got["previousKeyExpireTime"], k["previousKeyExpireTime"]) {
			t.Errorf("GET after regenerate: previousMaskedKey %v, previousKeyExpireTime %v", got["previousMaskedKey"], got["previousKeyExpireTime"])
		}
		for name, sec := range map[string]string{"old": secret, "new": newSecret} {
			v := validate(t, withIP(sec, "10.20.30.40"))
			if v["valid"] != true || keyID(v["key"].(map[string]any)) != id {
				t.Errorf("the %s secret in the grace period: %v", name, v)
			}
			// The key's policies hold for both.
			assertRefused(t, validate(t, withIP(sec, "11.0.0.1")), "REASON_IP_NOT_ALLOWED")
		}
	})

	t.Run("rate limit refusal", func(t *testing.T) {
		_, sec := s.createKey(t, `{"displayName": "one an hour `+unique+`", "rateLimit": {"limit": "1", "period": "3600s"}}`)
		v := s.validate(t, sec)
		if v["valid"] != true {
			t.Fatalf("first request: %v", v)
		}
		wantJSON(t, "first request's rateLimit", v["rateLimit"], map[string]any{"limit": "1", "remaining": "0", "resetAfter": v["rateLimit"].(map[string]any)["resetAfter"]})
		if ra := jsonDuration(t, "resetAfter", v["rateLimit"].(map[string]any)["resetAfter"]); ra < 3590*time.Second || ra > time.Hour {
			t.Errorf("resetAfter %v, want about an hour", ra)
		}
		v = s.validate(t, sec)
		assertRefused(t, v, "REASON_RATE_LIMITED")
		if ra := jsonDuration(t, "retryAfter", v["retryAfter"]); ra < 3590*time.Second || ra > time.Hour {
			t.Errorf("retryAfter %v, want about an hour", ra)
		}
		if rl, _ := v["rateLimit"].(map[string]any); rl["limit"] != "1" || rl["remaining"] != "0" {
			t.Errorf("a rate-limit refusal's rateLimit %v, want limit 1, remaining 0", v["rateLimit"])
		}
	})

	t.Run("quota refusal", func(t *testing.T) {
		_, sec := s.createKey(t, `{"displayName": "once `+unique+`", "quota": {"limit": 1}}`)
		v := s.validate(t, sec)
		if v["valid"] != true || v["remainingUses"] != "0" {
			t.Fatalf("first use: valid %v, remainingUses %v; want true, \"0\"", v["valid"], v["remainingUses"])
		}
		v = s.validate(t, sec)
		assertRefused(t, v, "REASON_USAGE_EXCEEDED")
		if v["retryAfter"] != nil {
			t.Errorf("a quota without refill gave retryAfter %v", v["retryAfter"])
		}
	})
}

// wantJSON compares a decoded JSON value with want.
func wantJSON(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(want)
		t.Errorf("%s: %s, want %s", what, g, w)
	}
}

// jsonTime reads an RFC 3339 timestamp as grpc-gateway writes one.
func jsonTime(t *testing.T, what string, v any) time.Time {
	t.Helper()
	s, _ := v.(string)
	ts, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("%s: %v is not an RFC 3339 timestamp", what, v)
	}
	return ts
}

// jsonDuration reads a protobuf Duration as JSON writes one ("3599.5s").
func jsonDuration(t *testing.T, what string, v any) time.Duration {
	t.Helper()
	s, _ := v.(string)
	if !strings.HasSuffix(s, "s") {
		t.Fatalf("%s: %v is not a JSON Duration", what, v)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("%s: %v is not a JSON Duration (%v)", what, v, err)
	}
	return d
}

// jsonInt reads an int64, which protojson writes as a string.
func jsonInt(t *testing.T, what string, v any) int64 {
	t.Helper()
	s, ok := v.(string)
	n, err := strconv.ParseInt(s, 10, 64)
	if !ok || err != nil {
		t.Fatalf("%s: %v (%T), want an int64 as a JSON string", what, v, v)
	}
	return n
}

// --- Envoy Check and forward-auth ---

// TestPolicyCheck sends a real server the CheckRequests Envoy would send, over
// gRPC, for keys with an IP allow-list, a rate limit and a quota, and calls
// forward-auth over HTTP.
func TestPolicyCheck(t *testing.T) {
	t.Parallel()
	sim := envoySim{t: t, e: loadEnvoyExample(t)}
	direct := startServerWith(t, serverOptions{DataDir: t.TempDir()})
	behind := startServerWith(t, serverOptions{DataDir: t.TempDir(), Args: []string{"--trusted-proxy-hops", "1"}})
	directCheck, behindCheck := dialCheck(t, direct.GRPCAddr), dialCheck(t, behind.GRPCAddr)

	// req is Envoy's CheckRequest for GET /anything with x-api-key: secret,
	// from the downstream address source, with X-Forwarded-For xff if set.
	// (deploy/envoy/envoy.yaml does not list x-forwarded-for in
	// allowed_headers, so with it Keyward never sees one; a deployment using
	// --trusted-proxy-hops behind Envoy has to add it. The header is added
	// here as Envoy would send it then.)
	req := func(secret, source, xff string) *authv3.CheckRequest {
		r := sim.checkRequest(request{"GET", "/anything", map[string]string{"X-Api-Key": secret, "User-Agent": "curl/8.5.0"}})
		r.Attributes.Source.Address.GetSocketAddress().Address = source
		if xff != "" {
			r.Attributes.Request.Http.Headers["x-forwarded-for"] = xff
		}
		return r
	}
	check := func(t *testing.T, c authv3.AuthorizationClient, r *authv3.CheckRequest) *authv3.CheckResponse {
		t.Helper()
		ctx, cancel := checkCtx()
		defer cancel()
		resp, err := c.Check(ctx, r)
		if err != nil {
			t.Fatalf("Check: %v (a refusal must be an answer, not an error)", err)
		}
		return resp
	}
	allowedOK := func(t *testing.T, what string, resp *authv3.CheckResponse) *authv3.OkHttpResponse {
		t.Helper()
		ok := resp.GetOkResponse()
		if ok == nil || resp.GetStatus().GetCode() != 0 {
			t.Fatalf("%s: %v, want ok_response", what, resp)
		}
		return ok
	}
	const plant = `"allowedCidrs": ["192.0.2.0/24", "2001:db8::/32"]`

	t.Run("ip allow-list/source address", func(t *testing.T) {
		k, secret := direct.createKey(t, `{"displayName": "plant", `+plant+`}`)
		for _, src := range []string{"192.0.2.10", "192.0.2.255", "2001:db8::7", "::ffff:192.0.2.1"} {
			ok := allowedOK(t, "from "+src, check(t, directCheck, req(secret, src, "")))
			h := headerMap(ok.GetHeaders())
			if h["x-keyward-key-id"] != keyID(k) {
				t.Errorf("from %s: identity headers %v", src, h)
			}
		}
		for _, src := range []string{"198.51.100.7", "192.0.3.1", "2001:db9::1", "10.0.0.2"} {
			denied(t, "from "+src, check(t, directCheck, req(secret, src, ""))).
				want(t, "from "+src, 403, "REASON_IP_NOT_ALLOWED")
		}
		// Without trusted hops, the client's own X-Forwarded-For proves nothing.
		denied(t, "spoofed xff", check(t, directCheck, req(secret, "198.51.100.7", "192.0.2.10"))).
			want(t, "X-Forwarded-For from an untrusted client", 403, "REASON_IP_NOT_ALLOWED")
	})

	t.Run("ip allow-list/trusted proxy hop", func(t *testing.T) {
		k, secret := behind.createKey(t, `{"displayName": "plant behind a proxy", `+plant+`}`)
		// The peer is the proxy (10.0.0.2, outside the list); its entry, the
		// last one, is the client.
		for _, xff := range []string{"192.0.2.10", "198.51.100.1, 192.0.2.10", "2001:db8::9"} {
			ok := allowedOK(t, "xff "+xff, check(t, behindCheck, req(secret, "10.0.0.2", xff)))
			if h := headerMap(ok.GetHeaders()); h["x-keyward-key-id"] != keyID(k) {
				t.Errorf("xff %q: identity headers %v", xff, h)
			}
		}
		for _, xff := range []string{"192.0.2.10, 198.51.100.1", "198.51.100.1", "garbage"} {
			denied(t, "xff "+xff, check(t, behindCheck, req(secret, "10.0.0.2", xff))).
				want(t, "X-Forwarded-For "+xff, 403, "REASON_IP_NOT_ALLOWED")
		}
		// The peer's own address counts for nothing behind a proxy, and no
		// header means no client address.
		denied(t, "no xff", check(t, behindCheck, req(secret, "192.0.2.10", ""))).
			want(t, "no X-Forwarded-For behind a trusted proxy", 403, "REASON_IP_NOT_ALLOWED")
	})

	t.Run("rate limit", func(t *testing.T) {
		_, secret := direct.createKey(t, `{"displayName": "two an hour", "rateLimit": {"limit": 2, "period": "3600s"}}`)
		r := req(secret, "192.0.2.10", "")
		for i, want := range []map[string]string{
			{"x-ratelimit-limit": "2", "x-ratelimit-remaining": "1", "x-ratelimit-reset": "1800"},
			{"x-ratelimit-limit": "2", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "3600"},
		} {
			ok := allowedOK(t, fmt.Sprintf("request %d", i+1), check(t, directCheck, r))
			got := headerMap(ok.GetResponseHeadersToAdd())
			if !mapsEqual(got, want) {
				t.Errorf("request %d: response_headers_to_add %v, want %v", i+1, got, want)
			}
			for _, o := range ok.GetResponseHeadersToAdd() {
				if o.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
					t.Errorf("response header %s: append action %v, want OVERWRITE_IF_EXISTS_OR_ADD", o.GetHeader().GetKey(), o.GetAppendAction())
				}
			}
		}
		d := want429(t, "third request", check(t, directCheck, r), "REASON_RATE_LIMITED")
		if ra, err := strconv.Atoi(d.header["retry-after"]); err != nil || ra < 1795 || ra > 1800 {
			t.Errorf("retry-after %q, want 1800 (one emission interval)", d.header["retry-after"])
		}
		if d.header["x-ratelimit-limit"] != "2" || d.header["x-ratelimit-remaining"] != "0" || d.header["x-ratelimit-reset"] == "" {
			t.Errorf("the refusal's x-ratelimit-* headers: %v", d.header)
		}
		// forward-auth shares the limit.
		f := direct.forwardAuth(t, http.Header{"X-Api-Key": {secret}})
		if f.Status != 429 || f.Header.Get("X-Keyward-Reason") != "REASON_RATE_LIMITED" {
			t.Fatalf("forward-auth: %d %s, want 429 REASON_RATE_LIMITED", f.Status, f.Body)
		}
		if ra, err := strconv.Atoi(f.Header.Get("Retry-After")); err != nil || ra < 1795 || ra > 1800 {
			t.Errorf("forward-auth: Retry-After %q, want 1800", f.Header.Get("Retry-After"))
		}
		if f.Header.Get("X-Ratelimit-Limit") != "2" || f.Header.Get("X-Ratelimit-Remaining") != "0" || f.Header.Get("X-Ratelimit-Reset") == "" {
			t.Errorf("forward-auth: X-RateLimit-* %v", f.Header)
		}
		var body struct{ Error, Reason string }
		if json.Unmarshal(f.Body, &body) != nil || body.Reason != "REASON_RATE_LIMITED" || body.Error == "" {
			t.Errorf("forward-auth: body %s", f.Body)
		}
	})

	t.Run("rate limit/forward-auth allowed", func(t *testing.T) {
		_, secret := direct.createKey(t, `{"displayName": "forward limited", "rateLimit": {"limit": 1, "period": "60s"}}`)
		f := direct.forwardAuth(t, http.Header{"X-Api-Key": {secret}})
		if f.Status != 200 || f.Header.Get("X-Ratelimit-Limit") != "1" || f.Header.Get("X-Ratelimit-Remaining") != "0" ||
			f.Header.Get("X-Ratelimit-Reset") != "60" || f.Header.Get("Retry-After") != "" {
			t.Errorf("forward-auth, first request: %d %v", f.Status, f.Header)
		}
		f = direct.forwardAuth(t, http.Header{"X-Api-Key": {secret}})
		if f.Status != 429 || f.Header.Get("Retry-After") == "" || f.Header.Get("X-Keyward-Reason") != "REASON_RATE_LIMITED" {
			t.Errorf("forward-auth, second request: %d %v %s", f.Status, f.Header, f.Body)
		}
	})

	t.Run("quota", func(t *testing.T) {
		_, secret := direct.createKey(t, `{"displayName": "metered", "quota": {"limit": 2}}`)
		r := req(secret, "192.0.2.10", "")
		for i := range 2 {
			allowedOK(t, fmt.Sprintf("use %d", i+1), check(t, directCheck, r))
		}
		d := want429(t, "third use", check(t, directCheck, r), "REASON_USAGE_EXCEEDED")
		if d.header["retry-after"] != "" {
			t.Errorf("a quota that never refills: retry-after %q", d.header["retry-after"])
		}
		f := direct.forwardAuth(t, http.Header{"X-Api-Key": {secret}})
		if f.Status != 429 || f.Header.Get("X-Keyward-Reason") != "REASON_USAGE_EXCEEDED" {
			t.Errorf("forward-auth with the quota used up: %d %v %s", f.Status, f.Header, f.Body)
		}
	})

	t.Run("forward-auth ip allow-list", func(t *testing.T) {
		// forward-auth's peer is this test: 127.0.0.1.
		_, local := direct.createKey(t, `{"displayName": "loopback", "allowedCidrs": ["127.0.0.0/8"]}`)
		_, plantSecret := direct.createKey(t, `{"displayName": "plant fa", `+plant+`}`)
		if f := direct.forwardAuth(t, http.Header{"X-Api-Key": {local}}); f.Status != 200 {
			t.Errorf("forward-auth from 127.0.0.1, allowed: %d %s", f.Status, f.Body)
		}
		f := direct.forwardAuth(t, http.Header{"X-Api-Key": {plantSecret}, "X-Forwarded-For": {"192.0.2.10"}})
		if f.Status != 403 || f.Header.Get("X-Keyward-Reason") != "REASON_IP_NOT_ALLOWED" {
			t.Errorf("forward-auth from 127.0.0.1 with a spoofed X-Forwarded-For: %d %s", f.Status, f.Body)
		}
		_, behindSecret := behind.createKey(t, `{"displayName": "plant fa behind", `+plant+`}`)
		if f := behind.forwardAuth(t, http.Header{"X-Api-Key": {behindSecret}, "X-Forwarded-For": {"198.51.100.1, 192.0.2.10"}}); f.Status != 200 {
			t.Errorf("forward-auth behind a trusted proxy, client 192.0.2.10: %d %s", f.Status, f.Body)
		}
		if f := behind.forwardAuth(t, http.Header{"X-Api-Key": {behindSecret}, "X-Forwarded-For": {"192.0.2.10, 198.51.100.1"}}); f.Status != 403 {
			t.Errorf("forward-auth behind a trusted proxy, client 198.51.100.1: %d %s", f.Status, f.Body)
		}
	})
}

// want429 asserts a 429 refusal for reason and returns it.
func want429(t *testing.T, what string, resp *authv3.CheckResponse, reason string) denial {
	t.Helper()
	d := denied(t, what, resp)
	if d.status != http.StatusTooManyRequests || d.reason != reason {
		t.Fatalf("%s: %d %s (%s), want 429 %s", what, d.status, d.reason, d.body, reason)
	}
	if d.code != codes.ResourceExhausted {
		t.Errorf("%s: CheckResponse.status %v, want ResourceExhausted", what, d.code)
	}
	if d.header["content-type"] != "application/json" || d.header["www-authenticate"] != "" {
		t.Errorf("%s: headers %v", what, d.header)
	}
	return d
}

// headerMap flattens Envoy header options to name → value.
func headerMap(opts []*corev3.HeaderValueOption) map[string]string {
	out := map[string]string{}
	for _, o := range opts {
		out[o.GetHeader().GetKey()] = o.GetHeader().GetValue()
	}
	return out
}

// forwardAuth calls GET /v1/auth with header, as a proxy's subrequest would.
func (s *server) forwardAuth(t *testing.T, header http.Header) response {
	t.Helper()
	req, err := http.NewRequest("GET", s.BaseURL+"/v1/auth", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header.Clone()
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("GET /v1/auth: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET /v1/auth: read body: %v", err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b, desc: "GET /v1/auth"}
}

// --- across instances ---

// createPolicyKey creates k through in over gRPC and returns its id and secret.
func (c *cluster) createPolicyKey(t *testing.T, in *instance, k *keywardv1.Key) (id, secret string) {
	t.Helper()
	ctx, cancel := rpcCtx()
	defer cancel()
	resp, err := in.kc.CreateKey(c.admin(ctx), &keywardv1.CreateKeyRequest{Key: k})
	if err != nil {
		t.Fatalf("CreateKey %q on %s: %v", k.GetDisplayName(), in.name, err)
	}
	return resp.GetKey().GetKeyId(), resp.GetSecret()
}

// update runs UpdateKey of paths through in.
func (c *cluster) update(t *testing.T, in *instance, k *keywardv1.Key, paths ...string) *keywardv1.Key {
	t.Helper()
	ctx, cancel := rpcCtx()
	defer cancel()
	resp, err := in.kc.UpdateKey(c.admin(ctx), &keywardv1.UpdateKeyRequest{Key: k, UpdateMask: &fieldmaskpb.FieldMask{Paths: paths}})
	if err != nil {
		t.Fatalf("UpdateKey %v on %s: %v", paths, in.name, err)
	}
	return resp.GetKey()
}

// validateReq runs one Validate through in.
func (in *instance) validateReq(req *keywardv1.ValidateRequest) (*keywardv1.ValidateResponse, error) {
	ctx, cancel := rpcCtx()
	defer cancel()
	return in.kc.Validate(ctx, req)
}

// TestPolicyRateLimitAcrossInstances: two instances over one Postgres and
// one Redis share a key's rate limit exactly. Goroutines on both hammer
// Validate as fast as they can; the number accepted must be what GCRA
// allows over the time measured, burst + rate × elapsed, within 5%.
func TestPolicyRateLimitAcrossInstances(t *testing.T) {
	const (
		rate    = 50 // per second
		burst   = 10
		workers = 4 // per instance
	)
	interval := time.Second / rate
	dur := 10 * time.Second
	if testing.Short() {
		dur = 3 * time.Second
	}
	dsn := testenv.Postgres(t)
	r := startRedis(t)
	c := startCluster(t, 2, dsn, r)
	_, secret := c.createPolicyKey(t, c.insts[0], &keywardv1.Key{DisplayName: "shared limit",
		RateLimit: &keywardv1.RateLimit{Limit: rate, Burst: burst}})
	// Warm each instance's caches, then let the bucket fill up again.
	for _, in := range c.insts {
		resp, err := in.validate(secret)
		if err != nil || !resp.GetValid() {
			t.Fatalf("warming %s: %v %v", in.name, resp, err)
		}
	}
	time.Sleep(time.Second)

	type tally struct {
		calls, allowed, wrong, errs int
		perInst                     [2]int
		samples                     []string
		last                        time.Time
	}
	tallies := make([]tally, 2*workers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	var t0 time.Time
	for w := range tallies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tl := &tallies[w]
			<-start
			deadline := t0.Add(dur)
			for i := 0; time.Now().Before(deadline); i++ {
				n := (w + i) % 2 // alternate instances
				resp, err := c.insts[n].validate(secret)
				tl.last = time.Now()
				tl.calls++
				switch {
				case err != nil:
					tl.errs++
					if len(tl.samples) < 3 {
						tl.samples = append(tl.samples, fmt.Sprintf("%s: %v", c.insts[n].name, err))
					}
				case resp.GetValid():
					tl.allowed++
					tl.perInst[n]++
					if rl := resp.GetRateLimit(); rl.GetLimit() != rate || rl.GetRemaining() < 0 || rl.GetRemaining() >= burst {
						tl.wrong++
						if len(tl.samples) < 3 {
							tl.samples = append(tl.samples, fmt.Sprintf("accepted with rate_limit %v", rl))
						}
					}
				default:
					ra := resp.GetRetryAfter().AsDuration()
					if resp.GetReason() != reasonRateLimited || ra <= 0 || ra > interval || resp.GetRateLimit().GetLimit() != rate {
						tl.wrong++
						if len(tl.samples) < 3 {
							tl.samples = append(tl.samples, fmt.Sprintf("%s: refused %v retry_after %v rate_limit %v",
								c.insts[n].name, resp.GetReason(), ra, resp.GetRateLimit()))
						}
					}
				}
			}
		}()
	}
	t0 = time.Now()
	close(start)
	wg.Wait()

	var total tally
	for _, tl := range tallies {
		total.calls += tl.calls
		total.allowed += tl.allowed
		total.wrong += tl.wrong
		total.errs += tl.errs
		total.perInst[0] += tl.perInst[0]
		total.perInst[1] += tl.perInst[1]
		total.samples = append(total.samples, tl.samples...)
		if tl.last.After(total.last) {
			total.last = tl.last
		}
	}
	elapsed := total.last.Sub(t0)
	expected := burst + rate*elapsed.Seconds()
	t.Logf("rate limit %d/s, burst %d, 2 instances × %d goroutines for %v: %d calls (%.0f/s), %d allowed (%d on %s, %d on %s), expected %.1f (%+.2f%%)",
		rate, burst, workers, elapsed.Round(time.Millisecond), total.calls, float64(total.calls)/elapsed.Seconds(),
		total.allowed, total.perInst[0], c.insts[0].name, total.perInst[1], c.insts[1].name,
		expected, 100*(float64(total.allowed)-expected)/expected)
	if total.errs > 0 || total.wrong > 0 {
		t.Errorf("%d errors, %d wrong answers; first: %s", total.errs, total.wrong, strings.Join(total.samples, "; "))
	}
	if diff := float64(total.allowed) - expected; diff > 0.05*expected || diff < -0.05*expected {
		t.Errorf("%d requests allowed, want %.1f ± 5%% (burst %d + %d/s × %.3fs)", total.allowed, expected, burst, rate, elapsed.Seconds())
	}
	if total.calls < 5*int(expected) {
		t.Errorf("only %d calls: too few to saturate the limit", total.calls)
	}
	for _, in := range c.insts {
		if n := in.MsgCount(msgLimiterDown); n > 0 {
			t.Errorf("%s logged %q %d times: it enforced the limit on its own for a while", in.name, msgLimiterDown, n)
		}
	}
}

// TestPolicyQuotaAcrossInstances: a quota is counted exactly across two
// instances over one Postgres, whether they validate through the store alone
// or through their caches (Redis and in-process): exactly limit uses are
// accepted, each sees a distinct remaining count, and the rest are refused
// for the quota.
func TestPolicyQuotaAcrossInstances(t *testing.T) {
	t.Parallel()
	for _, withRedis := range []bool{false, true} {
		name := "store only"
		if withRedis {
			name = "redis and in-process cache"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dsn := testenv.Postgres(t)
			var r *redisProc
			if withRedis {
				r = startRedis(t)
			}
			testQuotaAcrossInstances(t, startCluster(t, 2, dsn, r))
		})
	}
}

func testQuotaAcrossInstances(t *testing.T, c *cluster) {
	const (
		limit    = 1000
		maxCalls = 1500
		workers  = 16 // half on each instance
		enough   = 20 // consecutive refusals a worker needs to stop
	)
	id, secret := c.createPolicyKey(t, c.insts[1], &keywardv1.Key{DisplayName: "metered", Quota: &keywardv1.Quota{Limit: limit}})

	type result struct {
		inst      int
		valid     bool
		reason    keywardv1.ValidateResponse_Reason
		remaining *int64
		keyQuota  int64
		retry     bool
		err       error
	}
	var (
		sent    atomic.Int64
		mu      sync.Mutex
		results []result
		wg      sync.WaitGroup
	)
	t0 := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := w % 2
			var mine []result
			for refusedInARow := 0; refusedInARow < enough && sent.Add(1) <= maxCalls; {
				resp, err := c.insts[n].validate(secret)
				res := result{inst: n, err: err, valid: resp.GetValid(), reason: resp.GetReason(),
					remaining: resp.RemainingUses, keyQuota: resp.GetKey().GetQuota().GetRemaining(), retry: resp.GetRetryAfter() != nil}
				mine = append(mine, res)
				if err == nil && resp.GetReason() == reasonUsage {
					refusedInARow++
				} else {
					refusedInARow = 0
				}
			}
			mu.Lock()
			results = append(results, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	took := time.Since(t0)

	var accepted, refused, wrong, errs int
	var perInst [2]int
	seen := make([]int, limit)
	var samples []string
	sample := func(format string, args ...any) {
		if len(samples) < 10 {
			samples = append(samples, fmt.Sprintf(format, args...))
		}
	}
	for _, r := range results {
		switch {
		case r.err != nil:
			errs++
			sample("%s: %v", c.insts[r.inst].name, r.err)
		case r.valid:
			accepted++
			perInst[r.inst]++
			switch {
			case r.remaining == nil:
				wrong++
				sample("%s: accepted without remaining_uses", c.insts[r.inst].name)
			case *r.remaining < 0 || *r.remaining >= limit:
				wrong++
				sample("%s: remaining_uses %d", c.insts[r.inst].name, *r.remaining)
			default:
				seen[*r.remaining]++
				if r.keyQuota != *r.remaining {
					wrong++
					sample("%s: remaining_uses %d but key.quota.remaining %d", c.insts[r.inst].name, *r.remaining, r.keyQuota)
				}
			}
		case r.reason == reasonUsage && r.remaining == nil && !r.retry:
			refused++
		default:
			wrong++
			sample("%s: refused %v (remaining_uses %v, retry_after set %v)", c.insts[r.inst].name, r.reason, r.remaining, r.retry)
		}
	}
	t.Logf("quota %d over 2 instances, %d goroutines: %d calls in %v, %d accepted (%d on %s, %d on %s), %d refused for the quota, %d wrong, %d errors",
		limit, workers, len(results), took.Round(time.Millisecond), accepted, perInst[0], c.insts[0].name, perInst[1], c.insts[1].name, refused, wrong, errs)
	if accepted != limit {
		t.Errorf("%d uses accepted, want exactly %d", accepted, limit)
	}
	if wrong > 0 || errs > 0 {
		t.Errorf("%d wrong answers, %d errors; first: %s", wrong, errs, strings.Join(samples, "; "))
	}
	var missing, twice []int
	for i, n := range seen {
		if n == 0 {
			missing = append(missing, i)
		} else if n > 1 {
			twice = append(twice, i)
		}
	}
	if len(missing) > 0 || len(twice) > 0 {
		t.Errorf("remaining_uses of the accepted answers should be 0..%d once each: %d missing (first %v), %d repeated (first %v)",
			limit-1, len(missing), missing[:min(len(missing), 10)], len(twice), twice[:min(len(twice), 10)])
	}
	for _, in := range c.insts {
		q := c.getKey(t, in, id).GetQuota()
		if q.GetLimit() != limit || q.GetRemaining() != 0 {
			t.Errorf("GetKey on %s: quota %v, want limit %d, remaining 0", in.name, q, limit)
		}
	}
}

// TestPolicyUpdateAcrossInstances: with every cache on, an UpdateKey of a
// key's allow-list, rate limit or quota through one instance is in force on
// the other as soon as the call has returned, and so is a rotation.
func TestPolicyUpdateAcrossInstances(t *testing.T) {
	t.Parallel()
	dsn := testenv.Postgres(t)
	c := startCluster(t, 2, dsn, startRedis(t))

	// want validates req on in and fails unless the answer has reason want.
	want := func(t *testing.T, in *instance, when string, req *keywardv1.ValidateRequest, want keywardv1.ValidateResponse_Reason) *keywardv1.ValidateResponse {
		t.Helper()
		resp, err := in.validateReq(req)
		if err != nil {
			t.Fatalf("%s: Validate on %s: %v", when, in.name, err)
		}
		if resp.GetReason() != want || resp.GetValid() != (want == reasonValid) {
			t.Errorf("%s: Validate on %s: valid=%v %v, want %v", when, in.name, resp.GetValid(), resp.GetReason(), want)
		}
		return resp
	}
	warm := func(t *testing.T, req *keywardv1.ValidateRequest) {
		t.Helper()
		for _, in := range c.insts {
			for range 2 {
				want(t, in, "warming", req, reasonValid)
			}
		}
	}

	t.Run("allowed_cidrs", func(t *testing.T) {
		blocks := [][]string{{"10.0.0.0/8"}, {"192.0.2.0/24", "2001:db8::/32"}}
		inside := []string{"10.1.2.3", "192.0.2.77"}
		id, secret := c.createPolicyKey(t, c.insts[0], &keywardv1.Key{DisplayName: "moving plant", AllowedCidrs: blocks[0]})
		const trials = 40
		for trial := range trials {
			cur, next := trial%2, (trial+1)%2
			a, b := c.insts[trial%2], c.insts[(trial+1)%2] // written through one, read through the other
			warm(t, &keywardv1.ValidateRequest{Key: secret, ClientIp: inside[cur]})
			c.update(t, a, &keywardv1.Key{KeyId: id, AllowedCidrs: blocks[next]}, "allowed_cidrs")
			when := fmt.Sprintf("trial %d, right after UpdateKey on %s", trial, a.name)
			want(t, b, when, &keywardv1.ValidateRequest{Key: secret, ClientIp: inside[cur]}, reasonIPRefused)
			want(t, b, when, &keywardv1.ValidateRequest{Key: secret, ClientIp: inside[next]}, reasonValid)
			if t.Failed() {
				t.FailNow()
			}
		}
		// Clearing the list lifts it everywhere.
		warm(t, &keywardv1.ValidateRequest{Key: secret, ClientIp: inside[trials%2]})
		c.update(t, c.insts[1], &keywardv1.Key{KeyId: id}, "allowed_cidrs")
		want(t, c.insts[0], "after clearing allowed_cidrs", &keywardv1.ValidateRequest{Key: secret}, reasonValid)
	})

	t.Run("rate_limit", func(t *testing.T) {
		id, secret := c.createPolicyKey(t, c.insts[0], &keywardv1.Key{DisplayName: "newly limited"})
		req := &keywardv1.ValidateRequest{Key: secret}
		warm(t, req)
		// A limit set on A applies on B at once, and both share it.
		c.update(t, c.insts[0], &keywardv1.Key{KeyId: id, RateLimit: &keywardv1.RateLimit{Limit: 1, Period: durationpb.New(time.Hour)}}, "rate_limit")
		resp := want(t, c.insts[1], "right after setting 1/h on keyward-0", req, reasonValid)
		if rl := resp.GetRateLimit(); rl.GetLimit() != 1 || rl.GetRemaining() != 0 {
			t.Errorf("rate_limit status %v, want limit 1, remaining 0", rl)
		}
		resp = want(t, c.insts[1], "second request on keyward-1", req, reasonRateLimited)
		if ra := resp.GetRetryAfter().AsDuration(); ra < 59*time.Minute || ra > time.Hour {
			t.Errorf("retry_after %v, want about an hour", ra)
		}
		want(t, c.insts[0], "a request on keyward-0", req, reasonRateLimited)

		// Raising it applies at once: the new limit answers on the other
		// instance, and the key's state is cut to the new capacity, so it
		// waits at most one new interval (1 ms), not the old hour.
		c.update(t, c.insts[1], &keywardv1.Key{KeyId: id, RateLimit: &keywardv1.RateLimit{Limit: 1000, Period: durationpb.New(time.Second)}}, "rate_limit")
		resp, err := c.insts[0].validateReq(req)
		if err != nil {
			t.Fatalf("Validate on keyward-0 right after raising the limit: %v", err)
		}
		if ra := resp.GetRetryAfter().AsDuration(); resp.GetRateLimit().GetLimit() != 1000 ||
			!resp.GetValid() && (resp.GetReason() != reasonRateLimited || ra <= 0 || ra > time.Millisecond) {
			t.Errorf("right after raising the limit to 1000/s on keyward-1, keyward-0 answered %v %v, retry_after %v, rate_limit %v; want the new limit, allowed or retry_after ≤ 1ms",
				resp.GetValid(), resp.GetReason(), ra, resp.GetRateLimit())
		}
		t.Logf("right after raising 1/h to 1000/s: valid=%v %v retry_after %v", resp.GetValid(), resp.GetReason(), resp.GetRetryAfter().AsDuration())
		time.Sleep(20 * time.Millisecond)
		for i := range 4 {
			want(t, c.insts[i%2], "20ms after raising the limit to 1000/s", req, reasonValid)
		}

		// Removing it lifts it at once.
		c.update(t, c.insts[0], &keywardv1.Key{KeyId: id}, "rate_limit")
		for range 3 {
			resp = want(t, c.insts[1], "right after removing the limit on keyward-0", req, reasonValid)
			if resp.GetRateLimit() != nil {
				t.Errorf("a key without a limit reports rate_limit %v", resp.GetRateLimit())
			}
		}
	})

	t.Run("quota", func(t *testing.T) {
		id, secret := c.createPolicyKey(t, c.insts[0], &keywardv1.Key{DisplayName: "metered"})
		req := &keywardv1.ValidateRequest{Key: secret}
		warm(t, req)
		c.update(t, c.insts[0], &keywardv1.Key{KeyId: id, Quota: &keywardv1.Quota{Limit: 2}}, "quota")
		if got := want(t, c.insts[1], "right after setting a quota of 2 on keyward-0", req, reasonValid); got.RemainingUses == nil || got.GetRemainingUses() != 1 {
			t.Errorf("remaining_uses %v, want 1", got.RemainingUses)
		}
		want(t, c.insts[0], "second use", req, reasonValid)
		want(t, c.insts[1], "third use", req, reasonUsage)
		// A new quota starts afresh, everywhere.
		c.update(t, c.insts[1], &keywardv1.Key{KeyId: id, Quota: &keywardv1.Quota{Limit: 5}}, "quota")
		if got := want(t, c.insts[0], "right after a new quota of 5 on keyward-1", req, reasonValid); got.GetRemainingUses() != 4 {
			t.Errorf("remaining_uses %d, want 4", got.GetRemainingUses())
		}
		c.update(t, c.insts[0], &keywardv1.Key{KeyId: id}, "quota")
		if got := want(t, c.insts[1], "right after removing the quota on keyward-0", req, reasonValid); got.RemainingUses != nil {
			t.Errorf("a key without a quota reports remaining_uses %d", got.GetRemainingUses())
		}
	})

	t.Run("rotation with grace period", func(t *testing.T) {
		id, s0 := c.createPolicyKey(t, c.insts[0], &keywardv1.Key{DisplayName: "rotating"})
		regen := func(in *instance) string {
			t.Helper()
			ctx, cancel := rpcCtx()
			defer cancel()
			resp, err := in.kc.RegenerateKey(c.admin(ctx), &keywardv1.RegenerateKeyRequest{KeyId: id, GracePeriod: durationpb.New(time.Hour)})
			if err != nil {
				t.Fatalf("RegenerateKey on %s: %v", in.name, err)
			}
			return resp.GetSecret()
		}
		warm(t, &keywardv1.ValidateRequest{Key: s0})
		s1 := regen(c.insts[0])
		want(t, c.insts[1], "old secret right after a regenerate with grace on keyward-0", &keywardv1.ValidateRequest{Key: s0}, reasonValid)
		want(t, c.insts[1], "new secret right after a regenerate on keyward-0", &keywardv1.ValidateRequest{Key: s1}, reasonValid)
		warm(t, &keywardv1.ValidateRequest{Key: s0})
		warm(t, &keywardv1.ValidateRequest{Key: s1})
		// Regenerating again ends the first secret's grace at once.
		s2 := regen(c.insts[1])
		for _, in := range c.insts {
			want(t, in, "first secret after a second regenerate on keyward-1", &keywardv1.ValidateRequest{Key: s0}, keywardv1.ValidateResponse_REASON_NOT_FOUND)
			want(t, in, "second secret after a second regenerate", &keywardv1.ValidateRequest{Key: s1}, reasonValid)
			want(t, in, "third secret", &keywardv1.ValidateRequest{Key: s2}, reasonValid)
		}
		warm(t, &keywardv1.ValidateRequest{Key: s2})
		// Disabling ends the replaced one for good.
		if _, err := c.mgmt(c.insts[0], disable(id)); err != nil {
			t.Fatal(err)
		}
		want(t, c.insts[1], "replaced secret after DisableKey on keyward-0", &keywardv1.ValidateRequest{Key: s1}, keywardv1.ValidateResponse_REASON_NOT_FOUND)
		want(t, c.insts[1], "current secret after DisableKey on keyward-0", &keywardv1.ValidateRequest{Key: s2}, keywardv1.ValidateResponse_REASON_DISABLED)
	})
}
