package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/keymat"
)

// TestMetrics drives a real `keyward serve` through every entry point —
// REST (through the gateway), gRPC, forward-auth and Envoy's Check — scrapes
// /metrics with a real HTTP client between, and checks that each counter
// moved by exactly what the test did, that no label carries a key id, and
// that no secret reaches /metrics or the log.
func TestMetrics(t *testing.T) {
	t.Parallel()
	for _, mode := range storeModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			testMetrics(t, startServer(t, t.TempDir(), mode.dsn(t)))
		})
	}
}

func testMetrics(t *testing.T, s *server) {
	before := scrape(t, s)
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "keyward_validations_total", "keyward_cache_lookups_total"} {
		if _, ok := before.families[name]; !ok {
			t.Errorf("/metrics has no %s", name)
		}
	}
	if s.DSN != "" {
		if _, ok := before.families["keyward_postgres_pool_connections"]; !ok {
			t.Error("/metrics has no keyward_postgres_pool_connections with Postgres")
		}
	}

	// Two keys over REST; the second one disabled, with our own request id.
	k1, s1 := s.createKey(t, `{"displayName": "metrics one"}`)
	k2, s2 := s.createKey(t, `{"displayName": "metrics two"}`)
	req, _ := http.NewRequest("POST", s.BaseURL+"/v1/keys/"+keyID(k2)+":disable", nil)
	req.Header.Set("Authorization", "Bearer "+s.AdminKey)
	req.Header.Set("X-Request-Id", "e2e-metrics-disable")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Request-Id") != "e2e-metrics-disable" {
		t.Fatalf("disable: %d, X-Request-Id %q", resp.StatusCode, resp.Header.Get("X-Request-Id"))
	}
	// A search by a pasted secret in the query string (the console uses POST
	// :search; this is the URL form) must not leak it into labels or logs.
	s.call(t, "GET", "/v1/keys?query="+url.QueryEscape(s1), "", true).want(t, 200)

	unknown, err := keymat.Generate("live")
	if err != nil {
		t.Fatal(err)
	}
	// REST Validate: valid twice, not found, disabled, malformed.
	for _, c := range []struct{ secret, reason string }{
		{s1, "REASON_VALID"}, {s1, "REASON_VALID"}, {unknown.String(), "REASON_NOT_FOUND"},
		{s2, "REASON_DISABLED"}, {"kw_live_nope", "REASON_MALFORMED"},
	} {
		if got := s.validate(t, c.secret)["reason"]; got != c.reason {
			t.Fatalf("REST validate: reason %v, want %s", got, c.reason)
		}
	}
	// gRPC Validate: valid once.
	cc, err := grpc.NewClient(s.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := checkCtx()
	defer cancel()
	if r, err := keywardv1.NewKeyServiceClient(cc).Validate(ctx, &keywardv1.ValidateRequest{Key: s1}); err != nil || !r.GetValid() {
		t.Fatalf("gRPC validate: %v, %v", r, err)
	}
	// Forward-auth: valid, missing, disabled.
	for _, c := range []struct {
		key    string
		status int
	}{{s1, 200}, {"", 401}, {s2, 403}} {
		req, _ := http.NewRequest("GET", s.BaseURL+"/v1/auth?scopes=", nil)
		if c.key != "" {
			req.Header.Set("X-Api-Key", c.key)
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Fatalf("forward-auth: %d, want %d", resp.StatusCode, c.status)
		}
	}
	// Envoy's Check: valid once.
	check, err := authv3.NewAuthorizationClient(cc).Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: "/orders", Headers: map[string]string{"x-api-key": s1},
		}},
	}})
	if err != nil || check.GetOkResponse() == nil {
		t.Fatalf("Check: %v, %v; want an ok_response", check, err)
	}

	after := scrape(t, s)

	delta := func(name string, labels map[string]string) float64 {
		return after.value(name, labels) - before.value(name, labels)
	}
	expect := func(name string, labels map[string]string, want float64) {
		t.Helper()
		if got := delta(name, labels); got != want {
			t.Errorf("%s%v moved by %v, want %v", name, labels, got, want)
		}
	}
	verdict := func(entry, reason string) map[string]string {
		return map[string]string{"entry": entry, "reason": reason}
	}
	expect("keyward_validations_total", verdict("validate", "valid"), 3)
	expect("keyward_validations_total", verdict("validate", "not_found"), 1)
	expect("keyward_validations_total", verdict("validate", "disabled"), 1)
	expect("keyward_validations_total", verdict("validate", "malformed"), 1)
	expect("keyward_validations_total", verdict("validate", "error"), 0)
	expect("keyward_validations_total", verdict("forward_auth", "valid"), 1)
	expect("keyward_validations_total", verdict("forward_auth", "malformed"), 1) // the missing key
	expect("keyward_validations_total", verdict("forward_auth", "disabled"), 1)
	expect("keyward_validations_total", verdict("envoy_check", "valid"), 1)
	expect("keyward_validations_total", verdict("envoy_check", "not_found"), 0)

	rpc := func(service, method, code string) map[string]string {
		return map[string]string{"service": service, "method": method, "code": code}
	}
	const ks = "keyward.v1.KeyService"
	expect("keyward_grpc_server_handled_total", rpc(ks, "CreateKey", "OK"), 2)
	expect("keyward_grpc_server_handled_total", rpc(ks, "DisableKey", "OK"), 1)
	expect("keyward_grpc_server_handled_total", rpc(ks, "ListKeys", "OK"), 1)
	expect("keyward_grpc_server_handled_total", rpc(ks, "Validate", "OK"), 6) // five over REST, one over gRPC
	expect("keyward_grpc_server_handling_seconds", rpc(ks, "Validate", "OK"), 6)
	expect("keyward_grpc_server_handled_total", rpc("envoy.service.auth.v3.Authorization", "Check", "OK"), 1)

	route := func(route, method, code string) map[string]string {
		return map[string]string{"route": route, "method": method, "code": code}
	}
	expect("keyward_http_requests_total", route("/v1/keys", "POST", "200"), 2)
	expect("keyward_http_requests_total", route("/v1/keys", "GET", "200"), 1)
	expect("keyward_http_requests_total", route("/v1/keys/{key_id}:disable", "POST", "200"), 1)
	expect("keyward_http_requests_total", route("/v1/keys:validate", "POST", "200"), 5)
	expect("keyward_http_request_duration_seconds", route("/v1/keys:validate", "POST", "200"), 5)
	expect("keyward_http_requests_total", route("/v1/auth", "GET", "200"), 1)
	expect("keyward_http_requests_total", route("/v1/auth", "GET", "401"), 1)
	expect("keyward_http_requests_total", route("/v1/auth", "GET", "403"), 1)

	// Cache lookups: every management call authenticates its admin key
	// through the caches (4), and every presented well-formed key is looked
	// up (8: five REST and gRPC Validates that parse, two forward-auths,
	// one Check). Each in-process miss goes to the store exactly once; the
	// one unknown key is the one store miss.
	lookups := func(tier, result string) float64 {
		return delta("keyward_cache_lookups_total", map[string]string{"tier": tier, "result": result})
	}
	const presented = 4 + 8
	if s.DSN == "" { // SQLite: the in-process tier is on
		if got := lookups("local", "hit") + lookups("local", "miss"); got != presented {
			t.Errorf("in-process lookups moved by %v, want %d", got, presented)
		}
		if store, miss := lookups("store", "hit")+lookups("store", "miss"), lookups("local", "miss"); store != miss {
			t.Errorf("store lookups moved by %v, in-process misses by %v; want them equal", store, miss)
		}
	} else { // Postgres without Redis: the in-process tier is off
		if got := lookups("local", "hit") + lookups("local", "miss"); got != 0 {
			t.Errorf("in-process lookups moved by %v with the tier off", got)
		}
		if got := lookups("store", "hit") + lookups("store", "miss"); got != presented {
			t.Errorf("store lookups moved by %v, want %d", got, presented)
		}
	}
	if got := lookups("store", "miss"); got != 1 {
		t.Errorf("store misses moved by %v, want 1 (the unknown key)", got)
	}
	if got := delta("keyward_store_errors_total", map[string]string{"op": "get_by_hash", "kind": "unavailable"}); got != 0 {
		t.Errorf("store errors moved by %v", got)
	}

	// Secrets and key ids: never in /metrics; secrets never in the log.
	secrets := map[string]string{"first key's secret": s1, "second key's secret": s2, "unknown key": unknown.String(), "admin key": s.AdminKey}
	for what, v := range secrets {
		if strings.Contains(after.body, v) {
			t.Errorf("/metrics contains the %s", what)
		}
		if strings.Contains(s.Log(), v) {
			t.Errorf("the log contains the %s", what)
		}
	}
	for _, k := range []map[string]any{k1, k2} {
		if strings.Contains(after.body, keyID(k)) {
			t.Errorf("/metrics contains key id %s", keyID(k))
		}
	}
	if strings.Contains(s.Log(), "query=") {
		t.Error("the log contains a query string")
	}

	// One line per request, HTTP and the gRPC call it made, sharing the id.
	var httpLine, rpcLine map[string]any
	for _, line := range strings.Split(s.Log(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil || rec["request_id"] != "e2e-metrics-disable" {
			continue
		}
		switch rec["msg"] {
		case "http":
			httpLine = rec
		case "rpc":
			rpcLine = rec
		}
	}
	if httpLine == nil || httpLine["route"] != "/v1/keys/{key_id}:disable" || httpLine["status"] != float64(200) || httpLine["method"] != "POST" {
		t.Errorf("HTTP log line of the disable call: %v", httpLine)
	}
	if rpcLine == nil || rpcLine["method"] != "/keyward.v1.KeyService/DisableKey" || rpcLine["code"] != "OK" {
		t.Errorf("gRPC log line of the disable call: %v", rpcLine)
	}
	for _, rec := range []map[string]any{httpLine, rpcLine} {
		if _, ok := rec["duration"]; rec != nil && !ok {
			t.Errorf("log line without a duration: %v", rec)
		}
	}
}

// metricsPage is one parsed scrape.
type metricsPage struct {
	body     string
	families map[string]*dto.MetricFamily
}

func scrape(t *testing.T, s *server) metricsPage {
	t.Helper()
	resp, err := httpClient.Get(s.BaseURL + "/metrics") // no credential: scrapers send none
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("GET /metrics: Content-Type %q, want the text format", ct)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return metricsPage{body: string(body), families: families}
}

// value is the counter's value (or the histogram's count) of the series of
// name with exactly labels; 0 if there is none yet.
func (p metricsPage) value(name string, labels map[string]string) float64 {
	mf := p.families[name]
	if mf == nil {
		return 0
	}
	for _, m := range mf.GetMetric() {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		match := true
		for _, l := range m.GetLabel() {
			if labels[l.GetName()] != l.GetValue() {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		}
	}
	return 0
}
