package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keyward/keyward/internal/keymat"
	"github.com/keyward/keyward/internal/testenv"
)

// envoyExample is deploy/envoy/envoy.yaml, parsed and checked against
// Envoy's API schema (go-control-plane's types and their validation rules),
// and the parts of it a request meets on its way to Keyward.
type envoyExample struct {
	bootstrap *bootstrapv3.Bootstrap
	authz     *extauthzv3.ExtAuthz
	routes    []*routev3.Route
}

func loadEnvoyExample(t *testing.T) *envoyExample {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "envoy", "envoy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("envoy.yaml: %v", err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatalf("envoy.yaml as JSON: %v", err)
	}
	b := &bootstrapv3.Bootstrap{}
	// Unknown fields are errors: a misspelt option fails here, as in Envoy.
	if err := protojson.Unmarshal(js, b); err != nil {
		t.Fatalf("envoy.yaml is not an envoy.config.bootstrap.v3.Bootstrap: %v", err)
	}
	validateTree(t, "bootstrap", b)

	e := &envoyExample{bootstrap: b}
	lis := b.GetStaticResources().GetListeners()
	if len(lis) != 1 || len(lis[0].GetFilterChains()) != 1 || len(lis[0].GetFilterChains()[0].GetFilters()) != 1 {
		t.Fatal("envoy.yaml: want one listener with one filter chain of one filter (the HTTP connection manager)")
	}
	hcm := &hcmv3.HttpConnectionManager{}
	if err := lis[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
		t.Fatalf("envoy.yaml: the listener's filter: %v", err)
	}
	for i, f := range hcm.GetHttpFilters() {
		if f.GetName() != "envoy.filters.http.ext_authz" {
			continue
		}
		if i != 0 {
			t.Error("envoy.yaml: ext_authz should be the first HTTP filter")
		}
		e.authz = &extauthzv3.ExtAuthz{}
		if err := f.GetTypedConfig().UnmarshalTo(e.authz); err != nil {
			t.Fatal(err)
		}
	}
	if e.authz == nil {
		t.Fatal("envoy.yaml: no envoy.filters.http.ext_authz filter")
	}
	vhosts := hcm.GetRouteConfig().GetVirtualHosts()
	if len(vhosts) != 1 {
		t.Fatal("envoy.yaml: want one virtual host")
	}
	e.routes = vhosts[0].GetRoutes()
	return e
}

// validateTree runs the protoc-gen-validate rules of m and of every message
// packed in an Any inside it (the rules stop at an Any).
func validateTree(t *testing.T, where string, m proto.Message) {
	t.Helper()
	if v, ok := m.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			t.Errorf("envoy.yaml %s: %v", where, err)
		}
	}
	var walk func(where string, m protoreflect.Message)
	walk = func(where string, m protoreflect.Message) {
		if a, ok := m.Interface().(*anypb.Any); ok {
			inner, err := a.UnmarshalNew()
			if err != nil {
				t.Errorf("envoy.yaml %s: %v", where, err)
				return
			}
			validateTree(t, where+"("+a.GetTypeUrl()+")", inner)
			return
		}
		m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			name := where + "." + string(fd.Name())
			switch {
			case fd.IsList() && fd.Message() != nil:
				for i := 0; i < v.List().Len(); i++ {
					walk(fmt.Sprintf("%s[%d]", name, i), v.List().Get(i).Message())
				}
			case fd.IsMap() && fd.MapValue().Message() != nil:
				v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
					walk(name+"["+k.String()+"]", mv.Message())
					return true
				})
			case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
				walk(name, v.Message())
			}
			return true
		})
	}
	walk(where, m.ProtoReflect())
}

// TestCheckEnvoyExampleIsValid checks deploy/envoy/envoy.yaml against
// Envoy's schema and against what Keyward expects of it.
func TestCheckEnvoyExampleIsValid(t *testing.T) {
	e := loadEnvoyExample(t)
	a := e.authz
	if a.GetFailureModeAllow() {
		t.Error("ext_authz: failure_mode_allow must be false")
	}
	if a.GetWithRequestBody() != nil {
		t.Error("ext_authz: with_request_body must be unset (Keyward never needs the body)")
	}
	if a.GetTransportApiVersion() != corev3.ApiVersion_V3 {
		t.Error("ext_authz: transport_api_version must be V3")
	}
	if d := a.GetGrpcService().GetTimeout().AsDuration(); d <= 0 || d > time.Second {
		t.Errorf("ext_authz: grpc_service timeout %v, want set and at most 1s", d)
	}
	if c := a.GetStatusOnError().GetCode(); c != 503 {
		t.Errorf("ext_authz: status_on_error %v, want 503 like Keyward's own fail-closed answer", c)
	}
	cluster := a.GetGrpcService().GetEnvoyGrpc().GetClusterName()
	if cluster == "" {
		t.Fatal("ext_authz: want grpc_service.envoy_grpc")
	}
	found := false
	for _, c := range e.bootstrap.GetStaticResources().GetClusters() {
		if c.GetName() != cluster {
			continue
		}
		found = true
		opts := &upstreamhttpv3.HttpProtocolOptions{}
		if err := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].UnmarshalTo(opts); err != nil ||
			opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
			t.Errorf("cluster %s: gRPC needs HTTP/2 (explicit_http_config.http2_protocol_options)", cluster)
		}
	}
	if !found {
		t.Errorf("no cluster %s", cluster)
	}
	for _, h := range []string{"x-api-key", "authorization", "x-keyward-key-id", "x-keyward-anything"} {
		if !allowed(a.GetAllowedHeaders(), h) {
			t.Errorf("ext_authz: allowed_headers does not let %s through", h)
		}
	}
	if allowed(a.GetAllowedHeaders(), "cookie") {
		t.Error("ext_authz: allowed_headers sends cookies to Keyward")
	}
}

// allowed applies an allow-list the way Envoy does (header names are lower case).
func allowed(l *matcherv3.ListStringMatcher, name string) bool {
	for _, m := range l.GetPatterns() {
		s, n := name, ""
		switch {
		case m.GetExact() != "":
			n = m.GetExact()
		case m.GetPrefix() != "":
			n = m.GetPrefix()
		case m.GetSuffix() != "":
			n = m.GetSuffix()
		case m.GetContains() != "":
			n = m.GetContains()
		}
		if m.GetIgnoreCase() {
			s, n = strings.ToLower(s), strings.ToLower(n)
		}
		switch m.GetMatchPattern().(type) {
		case *matcherv3.StringMatcher_Exact:
			if s == n {
				return true
			}
		case *matcherv3.StringMatcher_Prefix:
			if strings.HasPrefix(s, n) {
				return true
			}
		case *matcherv3.StringMatcher_Suffix:
			if strings.HasSuffix(s, n) {
				return true
			}
		case *matcherv3.StringMatcher_Contains:
			if strings.Contains(s, n) {
				return true
			}
		default:
			panic("allowed_headers: this test knows exact, prefix, suffix and contains")
		}
	}
	return l == nil // no list: Envoy sends every header
}

// envoySim is Envoy as configured by envoy.yaml, as far as Keyward can
// tell: it routes a request, builds the CheckRequest the route's ext_authz
// settings produce, and applies Keyward's answer to the request.
type envoySim struct {
	t *testing.T
	e *envoyExample
}

// request is a client's request to Envoy.
type request struct {
	method, path string
	headers      map[string]string // as the client sent them (any case)
}

// checkRequest returns what Envoy sends Keyward for r, or nil if r's route
// turns the check off.
func (s envoySim) checkRequest(r request) *authv3.CheckRequest {
	s.t.Helper()
	var route *routev3.Route
	for _, rt := range s.e.routes {
		if s.matches(rt.GetMatch(), r) {
			route = rt
			break
		}
	}
	if route == nil {
		s.t.Fatalf("envoy.yaml: no route for %s %s", r.method, r.path)
	}
	var ext map[string]string
	if cfg := route.GetTypedPerFilterConfig()["envoy.filters.http.ext_authz"]; cfg != nil {
		per := &extauthzv3.ExtAuthzPerRoute{}
		if err := cfg.UnmarshalTo(per); err != nil {
			s.t.Fatal(err)
		}
		if per.GetDisabled() {
			return nil
		}
		ext = per.GetCheckSettings().GetContextExtensions()
	}
	headers := map[string]string{}
	for k, v := range r.headers {
		k = strings.ToLower(k)
		if allowed(s.e.authz.GetAllowedHeaders(), k) {
			headers[k] = v
		}
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "192.0.2.10", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 50412}}}}},
		Destination: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "10.0.0.2", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8000}}}}},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.Now(),
			Http: &authv3.AttributeContext_HttpRequest{
				Id: "0d5c0b5e-3f1a-4a8e-9d5e-7c1f2b3a4d5e", Method: r.method, Headers: headers,
				Path: r.path, Host: "api.example.com", Scheme: "http", Protocol: "HTTP/1.1", Size: -1,
			},
		},
		ContextExtensions: ext,
	}}
}

func (s envoySim) matches(m *routev3.RouteMatch, r request) bool {
	p, _, _ := strings.Cut(r.path, "?")
	switch m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		if !strings.HasPrefix(p, m.GetPrefix()) {
			return false
		}
	case *routev3.RouteMatch_Path:
		if p != m.GetPath() {
			return false
		}
	default:
		s.t.Fatalf("envoy.yaml: this test knows prefix and path route matches")
	}
	for _, h := range m.GetHeaders() {
		if h.GetName() != ":method" || h.GetStringMatch().GetExact() == "" {
			s.t.Fatalf("envoy.yaml: this test knows exact :method header matches")
		}
		if r.method != h.GetStringMatch().GetExact() {
			return false
		}
	}
	return true
}

// upstreamView applies an allowing answer to the client's request as Envoy
// does: headers set (overwriting), then headers removed, then query
// parameters removed. It returns what the upstream receives.
func (s envoySim) upstreamView(r request, ok *authv3.OkHttpResponse) (map[string]string, string) {
	s.t.Helper()
	h := map[string]string{}
	for k, v := range r.headers {
		h[strings.ToLower(k)] = v
	}
	for _, o := range ok.GetHeaders() {
		if o.GetAppend() != nil || o.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			s.t.Errorf("header %s: Keyward must overwrite, not append", o.GetHeader().GetKey())
		}
		h[o.GetHeader().GetKey()] = o.GetHeader().GetValue()
	}
	for _, name := range ok.GetHeadersToRemove() {
		if strings.HasPrefix(name, ":") || name == "host" {
			continue // Envoy never removes these
		}
		delete(h, name)
	}
	path := r.path
	if rm := ok.GetQueryParametersToRemove(); len(rm) > 0 {
		p, q, _ := strings.Cut(path, "?")
		vals, err := url.ParseQuery(q)
		if err != nil {
			s.t.Fatal(err)
		}
		for _, k := range rm {
			vals.Del(k)
		}
		path = p
		if enc := vals.Encode(); enc != "" {
			path += "?" + enc
		}
	}
	return h, path
}

func dialCheck(t *testing.T, addr string) authv3.AuthorizationClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return authv3.NewAuthorizationClient(cc)
}

// denial is a refusal as Envoy would relay it to the client.
type denial struct {
	status int
	code   codes.Code
	reason string
	body   string
	header map[string]string
}

func denied(t *testing.T, what string, resp *authv3.CheckResponse) denial {
	t.Helper()
	d := resp.GetDeniedResponse()
	if resp.GetOkResponse() != nil || d == nil {
		t.Fatalf("%s: %v, want a denied_response", what, resp)
	}
	out := denial{status: int(d.GetStatus().GetCode()), code: codes.Code(resp.GetStatus().GetCode()), body: d.GetBody(), header: map[string]string{}}
	if out.code == codes.OK {
		t.Fatalf("%s: denied_response with status OK: Envoy would let it through", what)
	}
	for _, h := range d.GetHeaders() {
		out.header[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	var body struct{ Error, Reason string }
	if err := json.Unmarshal([]byte(out.body), &body); err != nil || body.Error == "" {
		t.Fatalf("%s: body %q, want {\"error\", \"reason\"}", what, out.body)
	}
	out.reason = body.Reason
	return out
}

func (d denial) want(t *testing.T, what string, status int, reason string) {
	t.Helper()
	if d.status != status || d.reason != reason {
		t.Fatalf("%s: %d %s (%s), want %d %s", what, d.status, d.reason, d.body, status, reason)
	}
	wantCode := map[int]codes.Code{401: codes.Unauthenticated, 403: codes.PermissionDenied, 503: codes.Unavailable}[status]
	if d.code != wantCode {
		t.Errorf("%s: CheckResponse.status %v, want %v", what, d.code, wantCode)
	}
	if d.header["content-type"] != "application/json" {
		t.Errorf("%s: content-type %q", what, d.header["content-type"])
	}
	if (d.header["www-authenticate"] == `Bearer realm="keyward"`) != (status == 401) {
		t.Errorf("%s: www-authenticate %q with %d", what, d.header["www-authenticate"], status)
	}
}

func checkCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 5*time.Second)
}

// TestCheckEnvoyShaped sends a real `keyward serve` the CheckRequests that
// Envoy, configured by deploy/envoy/envoy.yaml, would send, over a real gRPC
// connection, and applies the answers as Envoy would.
func TestCheckEnvoyShaped(t *testing.T) {
	t.Parallel()
	e := loadEnvoyExample(t)
	sim := envoySim{t: t, e: e}
	s := startServerWith(t, serverOptions{DataDir: t.TempDir(),
		Args: []string{"--auth-forward-metadata", "team", "--auth-query-param", "api_key"}})
	client := dialCheck(t, s.GRPCAddr)

	reader, readerSecret := s.createKey(t, `{"displayName": "reader", "scopes": ["orders:read"], "metadata": {"team": "mes", "other": "x"}}`)
	writer, writerSecret := s.createKey(t, `{"displayName": "writer", "scopes": ["orders:read", "orders:write"]}`)
	_, testSecret := s.createKey(t, `{"displayName": "test env", "environment": "test", "scopes": ["orders:write"]}`)
	disabled, disabledSecret := s.createKey(t, `{"displayName": "disabled"}`)
	s.call(t, "POST", "/v1/keys/"+keyID(disabled)+":disable", "", true).want(t, http.StatusOK)
	secrets := []string{readerSecret, writerSecret, testSecret, disabledSecret}

	browser := func(extra map[string]string) map[string]string {
		h := map[string]string{"User-Agent": "curl/8.5.0", "Accept": "*/*", "Cookie": "session=abc", "X-Request-Id": "r-1"}
		for k, v := range extra {
			h[k] = v
		}
		return h
	}
	call := func(t *testing.T, r request) *authv3.CheckResponse {
		t.Helper()
		req := sim.checkRequest(r)
		if req == nil {
			t.Fatalf("%s %s: the route does not check", r.method, r.path)
		}
		ctx, cancel := checkCtx()
		defer cancel()
		resp, err := client.Check(ctx, req)
		if err != nil {
			t.Fatalf("Check: %v (a refusal must be an answer, not an error)", err)
		}
		return resp
	}
	allowedView := func(t *testing.T, r request) (map[string]string, string) {
		t.Helper()
		resp := call(t, r)
		ok := resp.GetOkResponse()
		if ok == nil || resp.GetStatus().GetCode() != 0 {
			t.Fatalf("%s %s: %v, want ok_response", r.method, r.path, resp)
		}
		h, path := sim.upstreamView(r, ok)
		for k, v := range h {
			if containsAny(v, secrets...) {
				t.Errorf("the upstream would see a key in %s", k)
			}
		}
		return h, path
	}
	wantHeaders := func(t *testing.T, h map[string]string, want map[string]string) {
		t.Helper()
		for k, v := range want {
			if got, ok := h[k]; v == "" && ok {
				t.Errorf("the upstream would see %s: %q", k, got)
			} else if v != "" && got != v {
				t.Errorf("the upstream would see %s = %q, want %q", k, got, v)
			}
		}
	}

	t.Run("ok/x-api-key-with-spoofed-identity", func(t *testing.T) {
		h, path := allowedView(t, request{"GET", "/orders/42?expand=lines", browser(map[string]string{
			"X-Api-Key": readerSecret, "X-Keyward-Key-Id": "key_SPOOFED", "x-keyward-meta-team": "root",
			"X-Keyward-Meta-Other": "spoof", "X-Keyward-Anything": "1"})})
		wantHeaders(t, h, map[string]string{
			"x-keyward-key-id": keyID(reader), "x-keyward-environment": "live", "x-keyward-scopes": "orders:read",
			"x-keyward-meta-team": "mes", "x-keyward-meta-other": "", "x-keyward-anything": "", "x-api-key": "",
			"user-agent": "curl/8.5.0", "cookie": "session=abc",
		})
		if path != "/orders/42?expand=lines" {
			t.Errorf("path %q changed", path)
		}
	})
	t.Run("ok/bearer-write", func(t *testing.T) {
		h, _ := allowedView(t, request{"POST", "/orders", browser(map[string]string{"Authorization": "Bearer " + writerSecret})})
		wantHeaders(t, h, map[string]string{"x-keyward-key-id": keyID(writer), "x-keyward-scopes": "orders:read,orders:write", "authorization": ""})
	})
	t.Run("ok/query-parameter-removed", func(t *testing.T) {
		h, path := allowedView(t, request{"GET", "/reports?day=3&api_key=" + url.QueryEscape(readerSecret) + "&x=1", browser(nil)})
		wantHeaders(t, h, map[string]string{"x-keyward-key-id": keyID(reader)})
		if path != "/reports?day=3&x=1" {
			t.Errorf("upstream path %q, want the key's parameter removed", path)
		}
	})
	t.Run("ok/healthz-not-checked", func(t *testing.T) {
		if sim.checkRequest(request{"GET", "/healthz", browser(nil)}) != nil {
			t.Fatal("envoy.yaml: /healthz should not be checked")
		}
	})
	t.Run("refused/missing", func(t *testing.T) {
		denied(t, "no key", call(t, request{"GET", "/anything", browser(nil)})).want(t, "no key", 401, "REASON_MALFORMED")
	})
	t.Run("refused/other-scheme", func(t *testing.T) {
		denied(t, "basic", call(t, request{"GET", "/anything", browser(map[string]string{"Authorization": "Basic dTpw"})})).
			want(t, "basic auth only", 401, "REASON_MALFORMED")
	})
	t.Run("refused/unknown", func(t *testing.T) {
		unknown, err := keymat.Generate("live")
		if err != nil {
			t.Fatal(err)
		}
		denied(t, "unknown", call(t, request{"GET", "/anything", browser(map[string]string{"X-Api-Key": unknown.String()})})).
			want(t, "unknown key", 401, "REASON_NOT_FOUND")
	})
	t.Run("refused/disabled", func(t *testing.T) {
		denied(t, "disabled", call(t, request{"GET", "/anything", browser(map[string]string{"X-Api-Key": disabledSecret})})).
			want(t, "disabled key", 403, "REASON_DISABLED")
	})
	t.Run("refused/route-scope", func(t *testing.T) {
		denied(t, "scope", call(t, request{"POST", "/orders", browser(map[string]string{"X-Api-Key": readerSecret})})).
			want(t, "POST /orders with orders:read", 403, "REASON_INSUFFICIENT_SCOPE")
	})
	t.Run("refused/route-environment", func(t *testing.T) {
		denied(t, "env", call(t, request{"DELETE", "/orders/42", browser(map[string]string{"X-Api-Key": testSecret})})).
			want(t, "DELETE /orders with a test key", 403, "REASON_WRONG_ENVIRONMENT")
	})

	t.Run("refused/disabled-while-traffic-flows", func(t *testing.T) {
		key, secret := s.createKey(t, `{"displayName": "flowing"}`)
		req := sim.checkRequest(request{"GET", "/anything", browser(map[string]string{"X-Api-Key": secret})})
		type answer struct {
			start time.Time
			ok    bool
			err   error
		}
		var (
			mu      sync.Mutex
			answers []answer
			stop    = make(chan struct{})
			wg      sync.WaitGroup
		)
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					start := time.Now()
					ctx, cancel := checkCtx()
					resp, err := client.Check(ctx, req)
					cancel()
					mu.Lock()
					answers = append(answers, answer{start, resp.GetOkResponse() != nil, err})
					mu.Unlock()
				}
			}()
		}
		time.Sleep(300 * time.Millisecond)
		s.call(t, "POST", "/v1/keys/"+keyID(key)+":disable", "", true).want(t, http.StatusOK)
		disabledAt := time.Now()
		ctx, cancel := checkCtx()
		resp, err := client.Check(ctx, req)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		denied(t, "next", resp).want(t, "the next Check after DisableKey returned", 403, "REASON_DISABLED")
		time.Sleep(300 * time.Millisecond)
		close(stop)
		wg.Wait()
		var before, after int
		for _, a := range answers {
			switch {
			case a.err != nil:
				t.Errorf("Check: %v", a.err)
			case a.start.Before(disabledAt):
				if a.ok {
					before++
				}
			case a.ok:
				t.Errorf("a Check started %v after DisableKey returned was allowed", a.start.Sub(disabledAt))
			default:
				after++
			}
		}
		if before == 0 || after == 0 {
			t.Errorf("%d allowed before, %d refused after: want both", before, after)
		}
		t.Logf("%d Checks allowed before DisableKey returned, %d refused after", before, after)
	})

	t.Run("ok/grpcurl-through-reflection", func(t *testing.T) {
		grpcurl := toolPath(t, "grpcurl")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, grpcurl, "-plaintext", s.GRPCAddr, "list").CombinedOutput()
		if err != nil || !slices.Contains(strings.Fields(string(out)), "envoy.service.auth.v3.Authorization") {
			t.Fatalf("grpcurl list: %v\n%s", err, out)
		}
		body := fmt.Sprintf(`{"attributes": {"request": {"http": {"method": "GET", "path": "/x", "headers": {"x-api-key": %q}}}, "contextExtensions": {"keyward_scopes": "orders:read"}}}`, readerSecret)
		out, err = exec.CommandContext(ctx, grpcurl, "-plaintext", "-d", body, s.GRPCAddr, "envoy.service.auth.v3.Authorization/Check").CombinedOutput()
		if err != nil {
			t.Fatalf("grpcurl Check: %v\n%s", err, out)
		}
		var resp struct {
			OkResponse struct {
				Headers []struct{ Header struct{ Key, Value string } }
			}
		}
		if err := json.Unmarshal(out, &resp); err != nil || len(resp.OkResponse.Headers) == 0 ||
			resp.OkResponse.Headers[0].Header.Key != "x-keyward-key-id" || resp.OkResponse.Headers[0].Header.Value != keyID(reader) {
			t.Fatalf("grpcurl Check: %s", out)
		}
	})
}

// TestCheckStrictHidesExistence: with --auth-strict, a disabled key is
// refused exactly like one that never existed.
func TestCheckStrictHidesExistence(t *testing.T) {
	t.Parallel()
	s := startServerWith(t, serverOptions{DataDir: t.TempDir(), Args: []string{"--auth-strict"}})
	client := dialCheck(t, s.GRPCAddr)
	sim := envoySim{t: t, e: loadEnvoyExample(t)}
	disabled, disabledSecret := s.createKey(t, `{"displayName": "disabled"}`)
	s.call(t, "POST", "/v1/keys/"+keyID(disabled)+":disable", "", true).want(t, http.StatusOK)
	unknown, err := keymat.Generate("live")
	if err != nil {
		t.Fatal(err)
	}
	check := func(secret string) denial {
		ctx, cancel := checkCtx()
		defer cancel()
		resp, err := client.Check(ctx, sim.checkRequest(request{"GET", "/anything", map[string]string{"x-api-key": secret}}))
		if err != nil {
			t.Fatal(err)
		}
		return denied(t, "strict", resp)
	}
	d, u := check(disabledSecret), check(unknown.String())
	d.want(t, "strict, disabled key", 401, "REASON_NOT_FOUND")
	if d.body != u.body || !mapsEqual(d.header, u.header) || d.code != u.code {
		t.Errorf("strict: disabled key %v, unknown key %v: want them identical", d, u)
	}
	// forward-auth answers alike.
	fa := func(secret string) response {
		req, _ := http.NewRequest("GET", s.BaseURL+"/v1/auth", nil)
		req.Header.Set("X-Api-Key", secret)
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r response
		r.Status, r.Header = resp.StatusCode, resp.Header
		r.Body = make([]byte, 0, 256)
		buf := make([]byte, 256)
		for {
			n, err := resp.Body.Read(buf)
			r.Body = append(r.Body, buf[:n]...)
			if err != nil {
				break
			}
		}
		return r
	}
	fd, fu := fa(disabledSecret), fa(unknown.String())
	if fd.Status != 401 || fd.Status != fu.Status || string(fd.Body) != string(fu.Body) {
		t.Errorf("strict forward-auth: disabled %d %s, unknown %d %s: want identical 401s", fd.Status, fd.Body, fu.Status, fu.Body)
	}
}

// TestCheckFailsClosedWhenStoreDown cuts Postgres away (Postgres without
// Redis keeps no in-process copies, so every Check reads the store): Check
// and forward-auth refuse with 503, never allow, and recover when the store
// is back, without a restart.
func TestCheckFailsClosedWhenStoreDown(t *testing.T) {
	t.Parallel()
	dsn := testenv.Postgres(t)
	proxy := testenv.NewProxy(t, postgresHostPort(t, dsn))
	s := startServerWith(t, serverOptions{DataDir: t.TempDir(), DSN: dsnVia(t, dsn, proxy.Addr())})
	client := dialCheck(t, s.GRPCAddr)
	sim := envoySim{t: t, e: loadEnvoyExample(t)}
	_, secret := s.createKey(t, `{"displayName": "valid"}`)
	req := sim.checkRequest(request{"GET", "/anything", map[string]string{"x-api-key": secret}})
	check := func() (*authv3.CheckResponse, error) {
		ctx, cancel := checkCtx()
		defer cancel()
		return client.Check(ctx, req)
	}
	if resp, err := check(); err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("store up: %v %v", resp, err)
	}

	proxy.Cut()
	for i := 0; i < 5; i++ {
		resp, err := check()
		if err != nil {
			t.Fatalf("store down: Check failed with %v; want a 503 answer", err)
		}
		d := denied(t, "store down", resp)
		d.want(t, "store down", 503, "REASON_UNSPECIFIED")
		if d.header["retry-after"] == "" {
			t.Error("store down: no retry-after")
		}
	}
	r, err := http.NewRequest("GET", s.BaseURL+"/v1/auth", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("X-Api-Key", secret)
	resp, err := httpClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Errorf("store down: forward-auth %d, want 503", resp.StatusCode)
	}
	if strings.Contains(s.Log(), secret) {
		t.Error("the server logged the secret")
	}

	if err := proxy.Restore(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := check()
		if err == nil && resp.GetOkResponse() != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("store back: Check still %v %v after 15s", resp, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
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
