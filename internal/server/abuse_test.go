package server_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/keymat"
	"github.com/keyward/keyward/internal/testserver"
)

// clientFrom is an HTTP client whose connections come from the loopback
// address local (127.0.0.2, …: all of 127/8 is local on Linux).
func clientFrom(local string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil, DialContext: d.DialContext}}
}

// restValidate posts key to /v1/keys:validate and returns the status, the
// decoded body and the response.
func restValidate(t *testing.T, c *http.Client, base, key string, header http.Header) (int, map[string]any, *http.Response) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"key": key})
	req, err := http.NewRequest("POST", base+"/v1/keys:validate", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("validate: %d, body %q is not JSON", resp.StatusCode, raw)
	}
	return resp.StatusCode, m, resp
}

func newSecret(t *testing.T) string {
	t.Helper()
	s, err := keymat.Generate("live")
	if err != nil {
		t.Fatal(err)
	}
	return s.String()
}

// TestRESTThrottle: failed REST validations are throttled per HTTP client
// address; valid keys never spend the budget; gRPC Validate is not
// throttled by default.
func TestRESTThrottle(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{Args: []string{"--abuse-burst=5", "--abuse-failures-per-second=1", "--abuse-refusal-floor=0"}})
	ctx := context.Background()
	created, err := srv.Client.CreateKey(srv.Admin(ctx), &keywardv1.CreateKeyRequest{Key: &keywardv1.Key{DisplayName: "throttle", Scopes: []string{"a"}}})
	if err != nil {
		t.Fatal(err)
	}
	valid := created.GetSecret()
	c := clientFrom("127.0.0.2")

	for i := range 30 { // valid keys and scope refusals: never counted
		if code, m, _ := restValidate(t, c, srv.BaseURL, valid, nil); code != 200 || m["valid"] != true {
			t.Fatalf("valid validation %d: %d %v", i+1, code, m)
		}
	}
	for i := range 5 {
		if code, m, _ := restValidate(t, c, srv.BaseURL, newSecret(t), nil); code != 200 || m["reason"] != "REASON_NOT_FOUND" {
			t.Fatalf("failure %d within the burst: %d %v", i+1, code, m)
		}
	}
	for _, key := range []string{newSecret(t), valid} {
		code, m, resp := restValidate(t, c, srv.BaseURL, key, nil)
		if code != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" ||
			m["code"] != float64(codes.ResourceExhausted) || !strings.Contains(m["message"].(string), "failed key validations from this address") {
			t.Fatalf("over the budget: %d, Retry-After %q, %v; want 429, Retry-After 1, RESOURCE_EXHAUSTED", code, resp.Header.Get("Retry-After"), m)
		}
	}
	// Throttled answers come from the HTTP listener, before the gateway: they
	// never reach gRPC, and are counted once.
	metrics := get(t, srv.BaseURL+"/metrics")
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, "keyward_grpc_server_handled_total{") && strings.Contains(line, `method="Validate"`) && strings.Contains(line, `code="ResourceExhausted"`) {
			t.Errorf("a throttled REST call reached gRPC: %s", line)
		}
	}
	if !strings.Contains(metrics, `keyward_abuse_throttled_total{surface="rest"} 2`) {
		t.Errorf("/metrics does not count 2 throttled REST calls:\n%s", grepLines(metrics, "keyward_abuse"))
	}

	// Another address has its own budget; a client's X-Forwarded-For is not
	// believed without --trusted-proxy-hops.
	if code, m, _ := restValidate(t, clientFrom("127.0.0.3"), srv.BaseURL, valid, nil); code != 200 || m["valid"] != true {
		t.Errorf("another address: %d %v", code, m)
	}
	if code, _, _ := restValidate(t, c, srv.BaseURL, valid, http.Header{"X-Forwarded-For": {"198.51.100.1"}}); code != http.StatusTooManyRequests {
		t.Errorf("a spoofed X-Forwarded-For escaped the throttle: %d", code)
	}
	// gRPC Validate is for trusted callers: not throttled unless configured.
	for range 10 {
		r, err := srv.Client.Validate(ctx, &keywardv1.ValidateRequest{Key: newSecret(t)})
		if err != nil || r.GetReason() != keywardv1.ValidateResponse_REASON_NOT_FOUND {
			t.Fatalf("gRPC Validate: %v, %v", r, err)
		}
	}
}

func TestRESTThrottleBehindProxy(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{Args: []string{"--abuse-burst=1", "--abuse-refusal-floor=0", "--trusted-proxy-hops=1",
		"--abuse-throttle-surfaces=rest,grpc"}})
	c := clientFrom("127.0.0.4") // the proxy
	from := func(client string) int {
		code, _, _ := restValidate(t, c, srv.BaseURL, newSecret(t), http.Header{"X-Forwarded-For": {"203.0.113.9, " + client}})
		return code
	}
	if code := from("198.51.100.1"); code != 200 {
		t.Fatalf("first failure: %d", code)
	}
	if code := from("198.51.100.1"); code != http.StatusTooManyRequests {
		t.Errorf("second failure of one client: %d, want 429", code)
	}
	if code := from("198.51.100.2"); code != 200 {
		t.Errorf("another client behind the proxy: %d, want 200", code)
	}

	// With grpc on, gRPC callers are throttled by their peer address.
	ctx := context.Background()
	if _, err := srv.Client.Validate(ctx, &keywardv1.ValidateRequest{Key: newSecret(t)}); err != nil {
		t.Fatal(err)
	}
	_, err := srv.Client.Validate(ctx, &keywardv1.ValidateRequest{Key: newSecret(t)})
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("second gRPC failure: %v, want RESOURCE_EXHAUSTED", err)
	}
	var retry *errdetails.RetryInfo
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			retry = ri
		}
	}
	if retry == nil || retry.GetRetryDelay().AsDuration() <= 0 {
		t.Errorf("RESOURCE_EXHAUSTED without a RetryInfo: %v", st.Details())
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
