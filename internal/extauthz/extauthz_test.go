package extauthz

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/keyward/keyward/internal/keymat"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/validate"
)

// store is an in-memory validate.Lookup; down makes every lookup fail as an
// unreachable store would.
type store struct {
	mu   sync.Mutex
	keys map[[32]byte]*keys.Key
	down bool
}

func (s *store) ByHash(_ context.Context, h [32]byte) (*keys.Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return nil, fmt.Errorf("get by hash: %w", keys.ErrUnavailable)
	}
	if k, ok := s.keys[h]; ok {
		return k, nil
	}
	return nil, keys.ErrNotFound
}

func (s *store) setDown(down bool) {
	s.mu.Lock()
	s.down = down
	s.mu.Unlock()
}

var now = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// add stores k under a fresh secret of k's environment and returns the secret.
func (s *store) add(t testing.TB, k *keys.Key) string {
	t.Helper()
	env := k.Environment
	if env == "" {
		env = "live"
	}
	sec, err := keymat.Generate(env)
	if err != nil {
		t.Fatal(err)
	}
	k.Hash = sec.Hash()
	s.mu.Lock()
	s.keys[sec.Sum()] = k
	s.mu.Unlock()
	return sec.String()
}

// world is a verifier over an in-memory store with the keys tests use.
type world struct {
	st                                             *store
	verifier                                       *validate.Verifier
	active, bare, disabled, expired, test, control string
	logs                                           *lockedBuffer
}

func newWorld(t testing.TB) *world {
	w := &world{st: &store{keys: map[[32]byte]*keys.Key{}}, logs: &lockedBuffer{}}
	w.verifier = validate.New(w.st, func() time.Time { return now })
	w.active = w.st.add(t, &keys.Key{ID: "key_ACTIVE", Environment: "live", State: keys.StateActive,
		Scopes: []string{"orders:read", "orders:write"}, Metadata: map[string]string{"team": "mes", "plant.id": "A-3"}})
	w.bare = w.st.add(t, &keys.Key{ID: "key_BARE", Environment: "live", State: keys.StateActive})
	w.disabled = w.st.add(t, &keys.Key{ID: "key_DISABLED", Environment: "live", State: keys.StateDisabled, Scopes: []string{"orders:read"}})
	w.expired = w.st.add(t, &keys.Key{ID: "key_EXPIRED", Environment: "live", State: keys.StateActive, ExpireTime: now.Add(-time.Second)})
	w.test = w.st.add(t, &keys.Key{ID: "key_TEST", Environment: "test", State: keys.StateActive})
	w.control = w.st.add(t, &keys.Key{ID: "key_CTRL", Environment: "live", State: keys.StateActive,
		Metadata: map[string]string{"team": "line1\r\nx-injected: yes"}})
	return w
}

func (w *world) authz(t testing.TB, o Options) *Authz {
	t.Helper()
	o.Verifier = w.verifier
	o.Logger = slog.New(slog.NewTextHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// envoyRequest is a CheckRequest as Envoy's ext_authz filter builds it:
// lower-case header names including the pseudo-headers, path with query,
// and the route's context_extensions.
func envoyRequest(path string, headers map[string]string, ext map[string]string) *authv3.CheckRequest {
	h := map[string]string{
		":authority": "api.example.com", ":method": "GET", ":path": path, ":scheme": "http",
		"user-agent": "curl/8.5.0", "accept": "*/*", "x-forwarded-proto": "http",
		"x-request-id": "5c1f0a1e-7f3b-4a55-9b0e-1d2c3b4a5f60",
	}
	for k, v := range headers {
		h[k] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "10.0.0.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 51234}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: h["x-request-id"], Method: "GET", Headers: h, Path: path, Host: "api.example.com",
			Scheme: "http", Protocol: "HTTP/1.1", Size: -1,
		}},
		ContextExtensions: ext,
	}}
}

// result is what one check told the proxy, whichever adapter answered.
type result struct {
	status  int               // 200 allowed
	set     map[string]string // identity headers set (lower case)
	remove  []string          // Envoy: headers removed; forward-auth: none
	qremove []string
	reason  string
	body    string
	header  map[string]string // headers of a refusal
}

func check(t *testing.T, a *Authz, req *authv3.CheckRequest) result {
	t.Helper()
	resp, err := a.Check(context.Background(), req)
	if err != nil {
		t.Fatalf("Check returned an error: %v (a refusal must be an answer)", err)
	}
	if ok := resp.GetOkResponse(); ok != nil {
		if resp.GetStatus().GetCode() != int32(codes.OK) {
			t.Fatalf("ok_response with status %v", resp.GetStatus())
		}
		r := result{status: 200, set: map[string]string{}, remove: slices.Sorted(slices.Values(ok.GetHeadersToRemove())), qremove: ok.GetQueryParametersToRemove()}
		for _, h := range ok.GetHeaders() {
			if h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD || h.GetAppend() != nil {
				t.Errorf("header %s: append_action %v, append %v; want OVERWRITE_IF_EXISTS_OR_ADD so a client's value is replaced",
					h.GetHeader().GetKey(), h.GetAppendAction(), h.GetAppend())
			}
			r.set[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
		}
		r.header = map[string]string{}
		for _, h := range ok.GetResponseHeadersToAdd() {
			r.header[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
		}
		return r
	}
	d := resp.GetDeniedResponse()
	if d == nil {
		t.Fatalf("neither ok_response nor denied_response: %v", resp)
	}
	if resp.GetStatus().GetCode() == int32(codes.OK) {
		t.Fatalf("denied_response with status OK would let the request through")
	}
	r := result{status: int(d.GetStatus().GetCode()), body: d.GetBody(), header: map[string]string{}}
	for _, h := range d.GetHeaders() {
		r.header[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	var body struct{ Error, Reason string }
	if err := json.Unmarshal([]byte(r.body), &body); err != nil || body.Error == "" {
		t.Fatalf("denied body %q: want {\"error\", \"reason\"} (%v)", r.body, err)
	}
	r.reason = body.Reason
	wantCode := map[int]codes.Code{401: codes.Unauthenticated, 403: codes.PermissionDenied, 429: codes.ResourceExhausted, 503: codes.Unavailable}[r.status]
	if codes.Code(resp.GetStatus().GetCode()) != wantCode {
		t.Errorf("status %d with gRPC code %v, want %v", r.status, codes.Code(resp.GetStatus().GetCode()), wantCode)
	}
	return r
}

func forward(t *testing.T, a *Authz, method, target string, headers http.Header) result {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for k, vs := range headers {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	rec := httptest.NewRecorder()
	mux := http.NewServeMux()
	a.Routes(mux)
	mux.ServeHTTP(rec, req)
	r := result{status: rec.Code, body: rec.Body.String(), set: map[string]string{}, header: map[string]string{}}
	for k, vs := range rec.Header() {
		lk := strings.ToLower(k)
		if len(vs) != 1 {
			t.Errorf("response header %s has %d values", k, len(vs))
		}
		if rec.Code == 200 && hasIdentityPrefix([]byte(lk)) {
			r.set[lk] = vs[0]
		} else {
			r.header[lk] = vs[0]
		}
	}
	if rec.Code != 200 {
		var body struct{ Error, Reason string }
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Error == "" {
			t.Fatalf("refusal body %q: want {\"error\", \"reason\"} (%v)", r.body, err)
		}
		r.reason = body.Reason
		if r.header["x-keyward-reason"] != body.Reason || r.header["x-keyward-error"] != body.Error {
			t.Errorf("X-Keyward-Reason/-Error %q/%q do not match the body %s", r.header["x-keyward-reason"], r.header["x-keyward-error"], r.body)
		}
		if r.header["content-type"] != "application/json" {
			t.Errorf("refusal content-type %q", r.header["content-type"])
		}
	} else if rec.Body.Len() != 0 {
		t.Errorf("allowed with a body: %q", rec.Body.String())
	}
	return r
}

func TestCheck(t *testing.T) {
	w := newWorld(t)
	def := w.authz(t, Options{StripCredential: true, Metadata: []string{"team", "plant.id"}})
	activeIdentity := map[string]string{
		"x-keyward-key-id": "key_ACTIVE", "x-keyward-environment": "live",
		"x-keyward-scopes": "orders:read,orders:write", "x-keyward-meta-team": "mes", "x-keyward-meta-plant-id": "A-3",
	}
	for _, tc := range []struct {
		name    string
		a       *Authz
		path    string
		headers map[string]string
		ext     map[string]string
		status  int
		reason  string
		set     map[string]string
		remove  []string
		qremove []string
	}{
		{name: "ok/x-api-key", headers: map[string]string{"x-api-key": w.active},
			status: 200, set: activeIdentity, remove: []string{"x-api-key"}},
		{name: "ok/bearer", headers: map[string]string{"authorization": "Bearer " + w.active},
			status: 200, set: activeIdentity, remove: []string{"authorization"}},
		{name: "ok/bearer-any-case", headers: map[string]string{"authorization": "bEaReR " + w.active},
			status: 200, set: activeIdentity, remove: []string{"authorization"}},
		{name: "ok/x-api-key-wins-and-both-are-stripped", headers: map[string]string{"x-api-key": w.active, "authorization": "Basic dTpw"},
			status: 200, set: activeIdentity, remove: []string{"authorization", "x-api-key"}},
		{name: "ok/no-strip", a: w.authz(t, Options{}), headers: map[string]string{"x-api-key": w.active},
			status: 200, set: map[string]string{"x-keyward-key-id": "key_ACTIVE", "x-keyward-environment": "live", "x-keyward-scopes": "orders:read,orders:write"}},
		{name: "ok/spoofed-identity-headers-replaced-or-removed", headers: map[string]string{
			"x-api-key": w.bare, "x-keyward-key-id": "key_SPOOF", "x-keyward-scopes": "admin", "x-keyward-meta-team": "root", "x-keyward-anything": "1"},
			status: 200, set: map[string]string{"x-keyward-key-id": "key_BARE", "x-keyward-environment": "live"},
			remove: []string{"x-api-key", "x-keyward-anything", "x-keyward-meta-team", "x-keyward-scopes"}},
		{name: "ok/route-scopes-held", headers: map[string]string{"x-api-key": w.active},
			ext:    map[string]string{ExtensionScopes: "orders:read, orders:write", ExtensionEnvironment: "live"},
			status: 200, set: activeIdentity, remove: []string{"x-api-key"}},
		{name: "ok/metadata-value-sanitised", headers: map[string]string{"x-api-key": w.control},
			status: 200, set: map[string]string{"x-keyward-key-id": "key_CTRL", "x-keyward-environment": "live", "x-keyward-meta-team": "line1  x-injected: yes"},
			remove: []string{"x-api-key"}},
		{name: "refused/missing", status: 401, reason: "REASON_MALFORMED"},
		{name: "refused/other-scheme", headers: map[string]string{"authorization": "Basic dTpw"}, status: 401, reason: "REASON_MALFORMED"},
		{name: "refused/empty-bearer", headers: map[string]string{"authorization": "Bearer "}, status: 401, reason: "REASON_MALFORMED"},
		{name: "refused/malformed", headers: map[string]string{"x-api-key": "kw_live_nope"}, status: 401, reason: "REASON_MALFORMED"},
		{name: "refused/two-keys-merged", headers: map[string]string{"x-api-key": w.active + "," + w.bare}, status: 401, reason: "REASON_MALFORMED"},
		{name: "refused/unknown", headers: map[string]string{"x-api-key": mustGenerate(t)}, status: 401, reason: "REASON_NOT_FOUND"},
		{name: "refused/disabled", headers: map[string]string{"x-api-key": w.disabled}, status: 403, reason: "REASON_DISABLED"},
		{name: "refused/expired", headers: map[string]string{"x-api-key": w.expired}, status: 403, reason: "REASON_EXPIRED"},
		{name: "refused/route-scope", headers: map[string]string{"x-api-key": w.active}, ext: map[string]string{ExtensionScopes: "orders:read,billing:read"},
			status: 403, reason: "REASON_INSUFFICIENT_SCOPE"},
		{name: "refused/route-environment", headers: map[string]string{"x-api-key": w.test}, ext: map[string]string{ExtensionEnvironment: "live"},
			status: 403, reason: "REASON_WRONG_ENVIRONMENT"},
		{name: "refused/query-param-not-enabled", path: "/orders?api_key=" + w.active, status: 401, reason: "REASON_MALFORMED"},
		{name: "ok/query-param-enabled", a: w.authz(t, Options{QueryParam: "api_key"}), path: "/orders?page=2&api_key=" + w.bare + "&x=1",
			status: 200, set: map[string]string{"x-keyward-key-id": "key_BARE", "x-keyward-environment": "live"}, qremove: []string{"api_key"}},
		{name: "ok/header-wins-over-query-param-and-param-still-removed", a: w.authz(t, Options{QueryParam: "api_key"}),
			path: "/orders?api_key=junk", headers: map[string]string{"x-api-key": w.bare},
			status: 200, set: map[string]string{"x-keyward-key-id": "key_BARE", "x-keyward-environment": "live"}, qremove: []string{"api_key"}},
		{name: "refused/custom-header-only", a: w.authz(t, Options{Headers: []string{"x-token"}}), headers: map[string]string{"x-api-key": w.active},
			status: 401, reason: "REASON_MALFORMED"},
		{name: "ok/custom-header", a: w.authz(t, Options{Headers: []string{"X-Token"}, StripCredential: true}), headers: map[string]string{"x-token": w.bare},
			status: 200, set: map[string]string{"x-keyward-key-id": "key_BARE", "x-keyward-environment": "live"}, remove: []string{"x-token"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := tc.a
			if a == nil {
				a = def
			}
			path := tc.path
			if path == "" {
				path = "/orders/42?expand=lines"
			}
			got := check(t, a, envoyRequest(path, tc.headers, tc.ext))
			if got.status != tc.status || got.reason != tc.reason {
				t.Fatalf("status %d %s (body %s), want %d %s", got.status, got.reason, got.body, tc.status, tc.reason)
			}
			if tc.status != 200 {
				if got.header["content-type"] != "application/json" {
					t.Errorf("content-type %q", got.header["content-type"])
				}
				if (got.header["www-authenticate"] == Challenge) != (tc.status == 401) {
					t.Errorf("www-authenticate %q with status %d", got.header["www-authenticate"], tc.status)
				}
				return
			}
			if !mapsEqual(got.set, tc.set) {
				t.Errorf("headers set %v, want %v", got.set, tc.set)
			}
			if !slices.Equal(got.remove, tc.remove) {
				t.Errorf("headers_to_remove %v, want %v", got.remove, tc.remove)
			}
			if !slices.Equal(got.qremove, tc.qremove) {
				t.Errorf("query_parameters_to_remove %v, want %v", got.qremove, tc.qremove)
			}
		})
	}
}

func TestCheckRawHeaders(t *testing.T) {
	// With encode_raw_headers, Envoy sends header_map instead of headers.
	w := newWorld(t)
	a := w.authz(t, Options{StripCredential: true})
	req := envoyRequest("/", nil, nil)
	req.Attributes.Request.Http.Headers = nil
	req.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: ":path", RawValue: []byte("/")},
		{Key: "x-api-key", RawValue: []byte(w.bare)},
		{Key: "x-keyward-scopes", RawValue: []byte("spoof")},
	}}
	got := check(t, a, req)
	if got.status != 200 || got.set["x-keyward-key-id"] != "key_BARE" || !slices.Equal(got.remove, []string{"x-api-key", "x-keyward-scopes"}) {
		t.Fatalf("got %+v", got)
	}
}

func TestStrictModeHidesExistence(t *testing.T) {
	w := newWorld(t)
	strict := w.authz(t, Options{Strict: true})
	unknown := check(t, strict, envoyRequest("/", map[string]string{"x-api-key": mustGenerate(t)}, nil))
	for name, secret := range map[string]string{"disabled": w.disabled, "expired": w.expired} {
		got := check(t, strict, envoyRequest("/", map[string]string{"x-api-key": secret}, nil))
		if got.status != 401 || got.body != unknown.body || !mapsEqual(got.header, unknown.header) {
			t.Errorf("strict, %s key: %d %s %v; want exactly the unknown key's %d %s %v", name, got.status, got.body, got.header, unknown.status, unknown.body, unknown.header)
		}
		fa := forward(t, strict, "GET", "/v1/auth", http.Header{"X-Api-Key": {secret}})
		fu := forward(t, strict, "GET", "/v1/auth", http.Header{"X-Api-Key": {mustGenerate(t)}})
		if fa.status != 401 || fa.body != fu.body || !mapsEqual(fa.header, fu.header) {
			t.Errorf("strict forward-auth, %s key: %d %s %v; want the unknown key's %d %s %v", name, fa.status, fa.body, fa.header, fu.status, fu.body, fu.header)
		}
	}
	got := check(t, strict, envoyRequest("/", map[string]string{"x-api-key": w.active}, map[string]string{ExtensionScopes: "billing:read"}))
	if got.status != 401 || got.reason != "REASON_INSUFFICIENT_SCOPE" || got.header["www-authenticate"] != Challenge {
		t.Errorf("strict, insufficient scope: %d %s %v; want 401 REASON_INSUFFICIENT_SCOPE with a challenge", got.status, got.reason, got.header)
	}
	if got := check(t, strict, envoyRequest("/", map[string]string{"x-api-key": w.active}, nil)); got.status != 200 {
		t.Errorf("strict, active key: %d", got.status)
	}
}

func TestFailsClosed(t *testing.T) {
	w := newWorld(t)
	a := w.authz(t, Options{})
	w.st.setDown(true)
	for i := 0; i < 3; i++ {
		got := check(t, a, envoyRequest("/", map[string]string{"x-api-key": w.active}, nil))
		if got.status != 503 || got.reason != "REASON_UNSPECIFIED" || got.header["retry-after"] != "1" {
			t.Fatalf("store down, Check: %d %s %v; want 503 with retry-after", got.status, got.reason, got.header)
		}
		fa := forward(t, a, "GET", "/v1/auth", http.Header{"X-Api-Key": {w.active}})
		if fa.status != 503 || fa.reason != "REASON_UNSPECIFIED" || fa.header["retry-after"] != "1" {
			t.Fatalf("store down, forward-auth: %d %s %v; want 503 with retry-after", fa.status, fa.reason, fa.header)
		}
	}
	// A missing key needs no lookup: still a plain 401.
	if got := check(t, a, envoyRequest("/", nil, nil)); got.status != 401 {
		t.Errorf("store down, no key: %d, want 401", got.status)
	}
	logs := w.logs.String()
	if n := strings.Count(logs, "cannot verify"); n != 1 {
		t.Errorf("%d warnings for 6 failures within a second, want 1 (rate-limited):\n%s", n, logs)
	}
	// A proxy that gave up waiting is not an outage to report.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	a.lastWarn.Store(0)
	if resp, err := a.Check(ctx, envoyRequest("/", map[string]string{"x-api-key": w.active}, nil)); err != nil || resp.GetOkResponse() != nil {
		t.Fatalf("cancelled: %v %v", resp, err)
	}
	if n := strings.Count(w.logs.String(), "cannot verify"); n != 1 {
		t.Errorf("a cancelled check was logged as an outage")
	}
	w.st.setDown(false)
	if got := check(t, a, envoyRequest("/", map[string]string{"x-api-key": w.active}, nil)); got.status != 200 {
		t.Errorf("store back: %d, want 200", got.status)
	}
}

func TestForwardAuth(t *testing.T) {
	w := newWorld(t)
	a := w.authz(t, Options{StripCredential: true, Metadata: []string{"team"}, QueryParam: "api_key"})
	for _, tc := range []struct {
		name    string
		method  string
		target  string
		headers http.Header
		status  int
		reason  string
		set     map[string]string
	}{
		{name: "ok/x-api-key", target: "/v1/auth", headers: http.Header{"X-Api-Key": {w.active}}, status: 200,
			set: map[string]string{"x-keyward-key-id": "key_ACTIVE", "x-keyward-environment": "live", "x-keyward-scopes": "orders:read,orders:write", "x-keyward-meta-team": "mes"}},
		{name: "ok/bearer-post", method: "POST", target: "/v1/auth", headers: http.Header{"Authorization": {"Bearer " + w.bare}}, status: 200,
			set: map[string]string{"x-keyward-key-id": "key_BARE", "x-keyward-environment": "live"}},
		{name: "ok/head", method: "HEAD", target: "/v1/auth", headers: http.Header{"X-Api-Key": {w.bare}}, status: 200,
			set: map[string]string{"x-keyward-key-id": "key_BARE", "x-keyward-environment": "live"}},
		{name: "ok/scopes-from-auth-url", target: "/v1/auth?scopes=orders:read&scopes=orders:write&environment=live", headers: http.Header{"X-Api-Key": {w.active}}, status: 200,
			set: map[string]string{"x-keyward-key-id": "key_ACTIVE", "x-keyward-environment": "live", "x-keyward-scopes": "orders:read,orders:write", "x-keyward-meta-team": "mes"}},
		{name: "ok/query-param-from-x-forwarded-uri", target: "/v1/auth", headers: http.Header{"X-Forwarded-Uri": {"/orders?api_key=" + w.bare}}, status: 200,
			set: map[string]string{"x-keyward-key-id": "key_BARE", "x-keyward-environment": "live"}},
		{name: "ok/query-param-from-x-original-uri", target: "/v1/auth", headers: http.Header{"X-Original-Uri": {"/orders?a=1&api_key=" + w.bare}}, status: 200,
			set: map[string]string{"x-keyward-key-id": "key_BARE", "x-keyward-environment": "live"}},
		{name: "refused/missing", target: "/v1/auth", status: 401, reason: "REASON_MALFORMED"},
		{name: "refused/query-of-auth-url-is-not-a-credential", target: "/v1/auth?api_key=" + w.bare, status: 401, reason: "REASON_MALFORMED"},
		{name: "refused/two-header-values", target: "/v1/auth", headers: http.Header{"X-Api-Key": {w.active, w.bare}}, status: 401, reason: "REASON_MALFORMED"},
		{name: "refused/unknown", target: "/v1/auth", headers: http.Header{"X-Api-Key": {mustGenerate(t)}}, status: 401, reason: "REASON_NOT_FOUND"},
		{name: "refused/disabled", target: "/v1/auth", headers: http.Header{"X-Api-Key": {w.disabled}}, status: 403, reason: "REASON_DISABLED"},
		{name: "refused/expired", target: "/v1/auth", headers: http.Header{"X-Api-Key": {w.expired}}, status: 403, reason: "REASON_EXPIRED"},
		{name: "refused/scope-from-auth-url", target: "/v1/auth?scopes=billing:read", headers: http.Header{"X-Api-Key": {w.active}}, status: 403, reason: "REASON_INSUFFICIENT_SCOPE"},
		{name: "refused/environment-from-auth-url", target: "/v1/auth?environment=live", headers: http.Header{"X-Api-Key": {w.test}}, status: 403, reason: "REASON_WRONG_ENVIRONMENT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = "GET"
			}
			got := forward(t, a, method, tc.target, tc.headers)
			if got.status != tc.status || got.reason != tc.reason {
				t.Fatalf("%d %s (body %s), want %d %s", got.status, got.reason, got.body, tc.status, tc.reason)
			}
			if got.header["cache-control"] != "no-store" {
				t.Errorf("cache-control %q, want no-store", got.header["cache-control"])
			}
			if tc.status == 200 && !mapsEqual(got.set, tc.set) {
				t.Errorf("identity headers %v, want %v", got.set, tc.set)
			}
			if (got.header["www-authenticate"] == Challenge) != (tc.status == 401) {
				t.Errorf("www-authenticate %q with %d", got.header["www-authenticate"], tc.status)
			}
		})
	}
}

// TestOneDecision: Check and forward-auth answer every case alike, since
// they share one decision.
func TestOneDecision(t *testing.T) {
	w := newWorld(t)
	for _, strict := range []bool{false, true} {
		a := w.authz(t, Options{Strict: strict, Metadata: []string{"team"}})
		for _, secret := range []string{"", "junk", mustGenerate(t), w.active, w.bare, w.disabled, w.expired, w.test} {
			for _, scopes := range []string{"", "orders:read", "nope"} {
				hdr := map[string]string{}
				fh := http.Header{}
				if secret != "" {
					hdr["x-api-key"], fh["X-Api-Key"] = secret, []string{secret}
				}
				c := check(t, a, envoyRequest("/", hdr, map[string]string{ExtensionScopes: scopes}))
				f := forward(t, a, "GET", "/v1/auth?scopes="+scopes, fh)
				if c.status != f.status || c.body != f.body || !mapsEqual(c.set, f.set) {
					t.Errorf("strict=%v scopes=%q: Check %d %s %v, forward-auth %d %s %v", strict, scopes, c.status, c.body, c.set, f.status, f.body, f.set)
				}
			}
		}
	}
}

// TestNeverLogsHeadersOrSecret runs every outcome with debug logging and
// looks for the secret and header values in everything logged.
func TestNeverLogsHeadersOrSecret(t *testing.T) {
	w := newWorld(t)
	a := w.authz(t, Options{StripCredential: true})
	secrets := []string{w.active, w.disabled, mustGenerate(t)}
	for _, s := range secrets {
		check(t, a, envoyRequest("/", map[string]string{"x-api-key": s, "cookie": "session=c00k1e"}, nil))
		forward(t, a, "GET", "/v1/auth", http.Header{"X-Api-Key": {s}, "Cookie": {"session=c00k1e"}})
	}
	w.st.setDown(true)
	for _, s := range secrets {
		check(t, a, envoyRequest("/", map[string]string{"x-api-key": s, "cookie": "session=c00k1e"}, nil))
		a.lastWarn.Store(0)
		forward(t, a, "GET", "/v1/auth", http.Header{"X-Api-Key": {s}, "Cookie": {"session=c00k1e"}})
	}
	logs := w.logs.String()
	if !strings.Contains(logs, "cannot verify") {
		t.Fatalf("the outage was not logged at all:\n%s", logs)
	}
	for _, s := range append(secrets, "c00k1e", keymat.Issuer+"_live_") {
		if strings.Contains(logs, s) {
			t.Errorf("log contains %q:\n%s", s, logs)
		}
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	v := validate.New(&store{keys: map[[32]byte]*keys.Key{}}, nil)
	for _, tc := range []struct {
		name string
		o    Options
	}{
		{"fail/no-verifier", Options{}},
		{"fail/header-name", Options{Verifier: v, Headers: []string{"x api key"}}},
		{"fail/identity-header", Options{Verifier: v, Headers: []string{"x-keyward-key-id"}}},
		{"fail/duplicate-header", Options{Verifier: v, Headers: []string{"x-api-key", "X-Api-Key"}}},
		{"fail/query-param", Options{Verifier: v, QueryParam: "api key"}},
		{"fail/metadata-name", Options{Verifier: v, Metadata: []string{"a b"}}},
		{"fail/metadata-collision", Options{Verifier: v, Metadata: []string{"plant.id", "plant_id"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.o); err == nil {
				t.Fatal("New accepted bad options")
			}
		})
	}
	if _, err := New(Options{Verifier: v, Headers: []string{"X-Token", "authorization"}, QueryParam: "api_key", Metadata: []string{"team", "plant.id"}}); err != nil {
		t.Fatalf("ok/all-set: %v", err)
	}
}

func TestQueryValue(t *testing.T) {
	for _, tc := range []struct {
		q, want string
		found   bool
	}{
		{"api_key=abc", "abc", true},
		{"a=1&api_key=abc&api_key=def", "abc", true},
		{"api_key=a%2Bb", "a+b", true},
		{"api_key=%zz", "", true},
		{"api_key", "", true},
		{"xapi_key=abc", "", false},
		{"", "", false},
	} {
		got, found := queryValue(tc.q, "api_key")
		if got != tc.want || found != tc.found {
			t.Errorf("queryValue(%q) = %q, %v; want %q, %v", tc.q, got, found, tc.want, tc.found)
		}
	}
}

func mustGenerate(t testing.TB) string {
	s, err := keymat.Generate("live")
	if err != nil {
		t.Fatal(err)
	}
	return s.String()
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestCheckConcurrent shares rendered identities and refusals between
// concurrent responses, as gRPC marshals them: run with -race.
func TestCheckConcurrent(t *testing.T) {
	w := newWorld(t)
	a := w.authz(t, Options{StripCredential: true, Metadata: []string{"team"}})
	reqs := [][]byte{}
	for _, s := range []string{w.active, w.bare, w.disabled, ""} {
		b, err := proto.Marshal(envoyRequest("/", map[string]string{"x-api-key": s, "x-keyward-scopes": "spoof"}, nil))
		if err != nil {
			t.Fatal(err)
		}
		reqs = append(reqs, b)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				resp, err := a.check(context.Background(), reqs[(g+i)%len(reqs)])
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := proto.Marshal(resp); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
