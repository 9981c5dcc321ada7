package extauthz

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/keyward/keyward/internal/abuse"
	"github.com/keyward/keyward/internal/keymat"
	"github.com/keyward/keyward/internal/validate"
)

// countingVerifier counts the verifications it is asked for.
type countingVerifier struct {
	Verifier
	n atomic.Int64
}

func (c *countingVerifier) Verify(ctx context.Context, req validate.Request) (validate.Result, error) {
	c.n.Add(1)
	return c.Verifier.Verify(ctx, req)
}

func newThrottle(t *testing.T, w *world, burst int, surfaces ...abuse.Surface) *abuse.Throttle {
	t.Helper()
	th, err := abuse.New(abuse.Options{PerSecond: 1, Burst: burst, Surfaces: surfaces, Logger: slog.New(slog.NewTextHandler(w.logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return th
}

func unknownKey(t *testing.T) string {
	t.Helper()
	s, err := keymat.Generate("live")
	if err != nil {
		t.Fatal(err)
	}
	return s.String()
}

func TestForwardAuthThrottle(t *testing.T) {
	w := newWorld(t)
	cv := &countingVerifier{Verifier: w.verifier}
	a, err := New(Options{Verifier: cv, Throttle: newThrottle(t, w, 4, abuse.ForwardAuth), Logger: w.authz(t, Options{}).log})
	if err != nil {
		t.Fatal(err)
	}
	key := func(k string) http.Header { return http.Header{"X-Api-Key": {k}} }
	// Valid keys, scope refusals and missing keys are not failures.
	for range 20 {
		forward(t, a, "GET", "/v1/auth", key(w.active))
		forward(t, a, "GET", "/v1/auth?scopes=billing:read", key(w.active))
		forward(t, a, "GET", "/v1/auth", nil)
	}
	// Four failures of the key itself spend the burst…
	for i, k := range []string{unknownKey(t), w.disabled, w.expired, "kw_live_garbage"} {
		if r := forward(t, a, "GET", "/v1/auth", key(k)); r.status == 429 {
			t.Fatalf("failure %d throttled within the burst", i+1)
		}
	}
	// …then even a valid key from that address is answered 429 at once.
	before := cv.n.Load()
	r := forward(t, a, "GET", "/v1/auth", key(w.active))
	if r.status != 429 || r.reason != "REASON_UNSPECIFIED" || r.header["retry-after"] != "1" ||
		!strings.Contains(r.header["x-keyward-error"], "too many failed") || r.header["www-authenticate"] != "" {
		t.Fatalf("throttled answer: %+v; want 429, Retry-After 1, X-Keyward-Reason REASON_UNSPECIFIED", r)
	}
	if cv.n.Load() != before {
		t.Error("a throttled request reached the verifier")
	}
	// Another address has its own budget.
	req := http.Header{"X-Api-Key": {w.active}}
	other := forwardFrom(t, a, "198.51.100.9:4000", req)
	if other != 200 {
		t.Errorf("another address: %d, want 200", other)
	}
	if !strings.Contains(w.logs.String(), "throttling failed API key validations") {
		t.Errorf("no log line about throttling: %s", w.logs)
	}
}

// forwardFrom is a forward-auth request from the peer addr; it returns the status.
func forwardFrom(t *testing.T, a *Authz, addr string, h http.Header) int {
	t.Helper()
	mux := http.NewServeMux()
	a.Routes(mux)
	req, _ := http.NewRequest("GET", "http://keyward/v1/auth", nil)
	req.RemoteAddr = addr
	req.Header = h
	rec := &statusRecorder{header: http.Header{}}
	mux.ServeHTTP(rec, req)
	return rec.status
}

type statusRecorder struct {
	header http.Header
	status int
}

func (r *statusRecorder) Header() http.Header { return r.header }
func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = 200
	}
	return len(b), nil
}
func (r *statusRecorder) WriteHeader(code int) { r.status = code }

func TestForwardAuthThrottleBehindProxy(t *testing.T) {
	w := newWorld(t)
	a := w.authz(t, Options{TrustedProxyHops: 1, Throttle: newThrottle(t, w, 1, abuse.ForwardAuth)})
	// nginx appends the client's address; two clients, one proxy.
	from := func(client, k string) int {
		return forwardFrom(t, a, "10.0.0.1:5000", http.Header{"X-Api-Key": {k}, "X-Forwarded-For": {"203.0.113.66, " + client}})
	}
	if s := from("198.51.100.1", unknownKey(t)); s != 401 {
		t.Fatalf("first failure: %d", s)
	}
	if s := from("198.51.100.1", unknownKey(t)); s != 429 {
		t.Errorf("second failure of the same client: %d, want 429", s)
	}
	if s := from("198.51.100.2", w.active); s != 200 {
		t.Errorf("another client behind the same proxy: %d, want 200", s)
	}
	if strings.Contains(w.logs.String(), "looks like a proxy") {
		t.Error("warned about a shared proxy address with --trusted-proxy-hops set")
	}

	// Without hops, the proxy's clients share its budget: say so, once.
	w2 := newWorld(t)
	b := w2.authz(t, Options{Throttle: newThrottle(t, w2, 1, abuse.ForwardAuth)})
	for range 3 {
		forwardFrom(t, b, "10.0.0.1:5000", http.Header{"X-Api-Key": {unknownKey(t)}, "X-Original-Uri": {"/orders"}})
	}
	if n := strings.Count(w2.logs.String(), "looks like a proxy"); n != 1 {
		t.Errorf("%d warnings about a shared proxy address, want 1:\n%s", n, w2.logs)
	}
}

func TestCheckThrottle(t *testing.T) {
	w := newWorld(t)
	off := w.authz(t, Options{Throttle: newThrottle(t, w, 1, abuse.ForwardAuth)})
	for range 5 {
		if r := check(t, off, envoyRequest("/orders", map[string]string{"x-api-key": unknownKey(t)}, nil)); r.status != 401 {
			t.Fatalf("Check with its surface off: %d, want 401", r.status)
		}
	}

	a := w.authz(t, Options{Throttle: newThrottle(t, w, 2, abuse.Check)})
	req := func(k, downstream string) *authv3.CheckRequest {
		r := envoyRequest("/orders", map[string]string{"x-api-key": k}, nil)
		r.Attributes.Source.Address.GetSocketAddress().Address = downstream
		return r
	}
	check(t, a, req(unknownKey(t), "10.0.0.7"))
	check(t, a, req(w.disabled, "10.0.0.7"))
	r := check(t, a, req(w.active, "10.0.0.7"))
	if r.status != 429 || r.header["retry-after"] != "1" || r.reason != "REASON_UNSPECIFIED" {
		t.Fatalf("throttled Check: %+v; want 429 with retry-after", r)
	}
	if r := check(t, a, req(w.active, "10.0.0.8")); r.status != 200 {
		t.Errorf("another downstream address: %d, want 200", r.status)
	}
}
