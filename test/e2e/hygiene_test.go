package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/jackc/pgx/v5"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/testenv"
)

// TestSecretHygiene (issue 9, item 6) runs a full session against the built
// binary — recoverable keys under a master key, every way to validate,
// regeneration with a grace period, reveal, leak reports, search by secret,
// bad input carrying secrets, failed sign-ins — with a JSON debug log and
// tracing to an OTLP receiver in the test, in both store modes. It collects
// everything Keyward said or kept: its stdout and stderr, every response
// (status, headers, body; the secret fields of the responses meant to carry
// one excepted), /metrics, the audit trail, the exported spans, the CLI's
// output, and afterwards the whole database (every table of Postgres, the
// SQLite files) and Redis (every key and value, and every command it was
// sent, through MONITOR). No secret minted during the run, nor the admin
// key, nor the master key, may appear in any of it: not whole, not its
// base62 body, not hex- or base64-encoded, and no 12-character run of a
// secret's body either (more than a masked key shows). SHA-256 hashes of
// secrets are expected at rest, and are looked for too, to prove the scan
// sees the stored data.
func TestSecretHygiene(t *testing.T) {
	t.Parallel()
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		runHygiene(t, "", nil)
	})
	t.Run("postgres+redis", func(t *testing.T) {
		t.Parallel()
		dsn := testenv.Postgres(t)
		runHygiene(t, dsn, startRedis(t))
	})
}

// hygiene is what one run collected, and the secrets it must not contain.
type hygiene struct {
	mu      sync.Mutex
	sources map[string]*bytes.Buffer
	order   []string
	secrets map[string]string // secret → what it is, for messages
	// returned are the secrets responses carried, in order, by route.
	returned []struct{ route, secret string }
	spans    int
}

func (h *hygiene) add(source string, data ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	b, ok := h.sources[source]
	if !ok {
		b = &bytes.Buffer{}
		h.sources[source] = b
		h.order = append(h.order, source)
	}
	for _, d := range data {
		switch d := d.(type) {
		case []byte:
			b.Write(d)
		case string:
			b.WriteString(d)
		default:
			fmt.Fprint(b, d)
		}
		b.WriteByte('\n')
	}
}

// minted registers a secret the run made or used.
func (h *hygiene) minted(secret, what string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if secret != "" {
		if _, ok := h.secrets[secret]; !ok {
			h.secrets[secret] = what
		}
	}
	return secret
}

// collector receives OTLP/HTTP trace exports into h.
func (h *hygiene) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	var req coltracepb.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(body, &req)
	}
	if r.URL.Path != "/v1/traces" || err != nil {
		http.Error(w, "bad export", http.StatusBadRequest)
		return
	}
	text, _ := protojson.Marshal(&req)
	h.add("traces", body, text)
	h.mu.Lock()
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			h.spans += len(ss.GetSpans())
			for _, s := range ss.GetSpans() {
				fmt.Fprintln(h.sources["traces"], "span", s.GetName())
			}
		}
	}
	h.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

func runHygiene(t *testing.T, dsn string, r *redisProc) {
	start := time.Now()
	h := &hygiene{sources: map[string]*bytes.Buffer{}, secrets: map[string]string{}}
	recv := httptest.NewServer(h)
	defer recv.Close()

	// The master key, in the encoding each mode is given.
	masterRaw := make([]byte, 32)
	if _, err := rand.Read(masterRaw); err != nil {
		t.Fatal(err)
	}
	master := base64.StdEncoding.EncodeToString(masterRaw)
	if dsn != "" {
		master = hex.EncodeToString(masterRaw)
	}
	admin := h.minted(mustSecret(t), "the admin key")
	dir := t.TempDir()
	args := []string{"--log-level", "debug", "--auth-query-param", "api_key"}
	var monitor *redisMonitor
	if r != nil {
		monitor = startRedisMonitor(t, r.Addr)
		args = append(args, "--redis-addr", r.Addr)
	}
	s := startServerWith(t, serverOptions{DataDir: dir, DSN: dsn, AdminKey: admin, Args: args, Env: []string{
		"KEYWARD_MASTER_KEY=" + master,
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.URL,
		"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"OTEL_BSP_SCHEDULE_DELAY=200",
		"OTEL_SERVICE_NAME=keyward-hygiene",
	}})
	conn, err := grpc.NewClient(s.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	kc := keywardv1.NewKeyServiceClient(conn)
	az := authv3.NewAuthorizationClient(conn)

	// rest sends a request as token (none if ""), records the response,
	// registers the secret it carries (if any) and leaves it out of the
	// record, and asserts the status.
	rest := func(token, method, path, body string, wantStatus int, header ...string) map[string]any {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, err := http.NewRequest(method, s.BaseURL+path, rd)
		if err != nil {
			t.Fatal(err)
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, strings.Split(path, "?")[0], err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var m map[string]any
		json.Unmarshal(raw, &m)
		if sec, ok := m["secret"].(string); ok && resp.StatusCode == 200 {
			route := method + " " + routeTemplate(path)
			h.minted(sec, "a secret returned by "+route)
			h.mu.Lock()
			h.returned = append(h.returned, struct{ route, secret string }{route, sec})
			h.mu.Unlock()
			delete(m, "secret")
			raw, _ = json.Marshal(m)
		}
		var hdr bytes.Buffer
		resp.Header.Write(&hdr)
		h.add("responses", fmt.Sprintf("%s %s → %d", method, routeOf(path), resp.StatusCode), hdr.String(), raw)
		if resp.StatusCode != wantStatus {
			t.Errorf("%s %s: status %d, want %d; body %s", method, routeOf(path), resp.StatusCode, wantStatus, redactAll(string(raw), h))
		}
		return m
	}
	adminCtx := func(token string) (context.Context, context.CancelFunc) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if token != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
		}
		return ctx, cancel
	}
	// rpc records a gRPC call's outcome: its status (code, message,
	// details), headers and trailers, and its response with any secret
	// field cleared (the caller registers it first).
	rpc := func(what string, token string, call func(ctx context.Context, opts ...grpc.CallOption) (proto.Message, error)) (proto.Message, error) {
		t.Helper()
		ctx, cancel := adminCtx(token)
		defer cancel()
		var hd, tr metadata.MD
		resp, err := call(ctx, grpc.Header(&hd), grpc.Trailer(&tr))
		st, _ := status.FromError(err)
		stText, _ := protojson.Marshal(st.Proto())
		var respText []byte
		if err == nil && resp != nil {
			c := proto.Clone(resp)
			clearSecret(c, h, what)
			respText, _ = protojson.Marshal(c)
		}
		h.add("responses", "gRPC "+what+" → "+st.Code().String(), st.Message(), stText, fmt.Sprint(hd), fmt.Sprint(tr), respText)
		return resp, err
	}
	wantCode := func(what string, err error, code string) {
		t.Helper()
		if got := status.Code(err).String(); got != code {
			t.Errorf("%s: %s (%s), want %s", what, got, redactAll(status.Convert(err).Message(), h), code)
		}
	}

	// Keys: plain over REST, recoverable over REST, one over gRPC, one with policies.
	a := rest(admin, "POST", "/v1/keys", `{"displayName": "hygiene A", "scopes": ["orders:read"]}`, 200)
	aID := keyID(a["key"].(map[string]any))
	aSecret := secretOf(h, "POST /v1/keys", 0)
	b := rest(admin, "POST", "/v1/keys", `{"displayName": "hygiene B", "environment": "test", "recoverable": true}`, 200)
	bKey, _ := b["key"].(map[string]any)
	bID := keyID(bKey)
	if bKey["recoverable"] != true {
		t.Fatalf("the recoverable key is not recoverable: %v", bKey)
	}
	bSecret := secretOf(h, "POST /v1/keys", 1)
	resp, err := rpc("CreateKey", admin, func(ctx context.Context, o ...grpc.CallOption) (proto.Message, error) {
		return kc.CreateKey(ctx, &keywardv1.CreateKeyRequest{Key: &keywardv1.Key{DisplayName: "hygiene C", Scopes: []string{"telemetry:*"}}, RequestId: "hygiene-c"}, o...)
	})
	if err != nil {
		t.Fatalf("CreateKey C: %v", err)
	}
	cID := resp.(*keywardv1.CreateKeyResponse).GetKey().GetKeyId()
	cSecret := resp.(*keywardv1.CreateKeyResponse).GetSecret()
	// The same request_id again: AlreadyExists, naming the key, not the secret.
	_, err = rpc("CreateKey (retry)", admin, func(ctx context.Context, o ...grpc.CallOption) (proto.Message, error) {
		return kc.CreateKey(ctx, &keywardv1.CreateKeyRequest{Key: &keywardv1.Key{DisplayName: "hygiene C"}, RequestId: "hygiene-c"}, o...)
	})
	wantCode("CreateKey with a used request_id", err, "AlreadyExists")
	d := rest(admin, "POST", "/v1/keys", `{"displayName": "hygiene D", "ttl": "86400s", "allowedCidrs": ["127.0.0.0/8"],
		"rateLimit": {"limit": "100"}, "quota": {"limit": "1000", "refill": "REFILL_DAILY"}, "recoverable": true}`, 200)
	dID := keyID(d["key"].(map[string]any))
	dSecret := secretOf(h, "POST /v1/keys", 2)

	// Secrets never issued, and wrong credentials.
	unknown := h.minted(mustSecret(t), "a well-formed secret never issued")
	wrongAdmin := h.minted(mustSecret(t), "a wrong admin key")
	garbage := h.minted("not-a-key-"+randomName(t)+randomName(t)+randomName(t), "a malformed bearer token")

	// Validate over REST and gRPC: valid, unknown, malformed (a secret
	// missing its last character), insufficient scope, a bad client_ip
	// that is a secret.
	for _, v := range []struct {
		body   string
		status int
	}{
		{`{"key": "` + aSecret + `"}`, 200},
		{`{"key": "` + aSecret + `", "requiredScopes": ["orders:write"]}`, 200},
		{`{"key": "` + unknown + `"}`, 200},
		{`{"key": "` + aSecret[:len(aSecret)-1] + `"}`, 200},
		{`{"key": "` + dSecret + `", "clientIp": "127.0.0.1"}`, 200},
		{`{"key": "` + dSecret + `", "clientIp": "` + unknown + `"}`, 400},
		{`{"key": "` + aSecret + `", "requiredScopes": "` + unknown + `"}`, 400}, // a string, not a list
		{`{"key": "` + aSecret + `", "` + unknown + `": 1}`, 400},                // an unknown field
		{`{"key": "` + aSecret, 400},                                             // cut short
	} {
		rest("", "POST", "/v1/keys:validate", v.body, v.status)
	}
	for _, secret := range []string{cSecret, unknown, cSecret[:len(cSecret)-1]} {
		rpc("Validate", "", func(ctx context.Context, o ...grpc.CallOption) (proto.Message, error) {
			return kc.Validate(ctx, &keywardv1.ValidateRequest{Key: secret, RequiredScopes: []string{"telemetry:write"}}, o...)
		})
	}
	_, err = rpc("Validate (bad client_ip)", "", func(ctx context.Context, o ...grpc.CallOption) (proto.Message, error) {
		return kc.Validate(ctx, &keywardv1.ValidateRequest{Key: cSecret, ClientIp: cSecret}, o...)
	})
	wantCode("Validate with a secret as client_ip", err, "InvalidArgument")

	// Envoy's Check: in x-api-key, in authorization, in the query string.
	for _, c := range []struct{ header, value, path string }{
		{"x-api-key", aSecret, "/orders"},
		{"authorization", "Bearer " + unknown, "/orders"},
		{"authorization", "Bearer " + garbage, "/orders"},
		{"", "", "/orders?api_key=" + cSecret + "&x=1"},
		{"x-api-key", bSecret, "/orders"},
	} {
		headers := map[string]string{}
		if c.header != "" {
			headers[c.header] = c.value
		}
		rpc("Check", "", func(ctx context.Context, o ...grpc.CallOption) (proto.Message, error) {
			return az.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
				Source: &authv3.AttributeContext_Peer{},
				Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
					Method: "GET", Path: c.path, Host: "api.example.com", Headers: headers,
				}},
			}}, o...)
		})
	}
	// Forward-auth: the same, as nginx and Traefik send it.
	for _, c := range []struct {
		header []string
		status int
	}{
		{[]string{"X-Api-Key", aSecret}, 200},
		{[]string{"Authorization", "Bearer " + unknown}, 401},
		{[]string{"X-Forwarded-Uri", "/orders?api_key=" + cSecret}, 200},
		{[]string{"X-Original-URI", "/orders?api_key=" + unknown}, 401},
		{[]string{"X-Api-Key", aSecret[:len(aSecret)-1]}, 401},
	} {
		rest("", "GET", "/v1/auth", "", c.status, c.header...)
	}

	// Regenerate with a grace period; both secrets work meanwhile.
	rest(admin, "POST", "/v1/keys/"+aID+":regenerate", `{"gracePeriod": "3600s"}`, 200)
	a2Secret := secretOf(h, "POST /v1/keys/{key_id}:regenerate", 0)
	for _, secret := range []string{aSecret, a2Secret} {
		if got := rest("", "POST", "/v1/keys:validate", `{"key": "`+secret+`"}`, 200); got["valid"] != true {
			t.Errorf("during the grace period, a secret of A is refused: %v", got["reason"])
		}
	}
	// The recoverable key: regenerate, reveal (twice: REST and gRPC); a
	// key that is not recoverable cannot be revealed.
	rest(admin, "POST", "/v1/keys/"+bID+":regenerate", `{}`, 200)
	b2Secret := secretOf(h, "POST /v1/keys/{key_id}:regenerate", 1)
	if got := rest(admin, "POST", "/v1/keys/"+bID+":reveal", `{}`, 200); got == nil {
		t.Error("reveal B: no answer")
	}
	if revealed := secretOf(h, "POST /v1/keys/{key_id}:reveal", -1); revealed != b2Secret {
		t.Error("RevealKey returned another secret than RegenerateKey")
	}
	resp, err = rpc("RevealKey", admin, func(ctx context.Context, o ...grpc.CallOption) (proto.Message, error) {
		return kc.RevealKey(ctx, &keywardv1.RevealKeyRequest{KeyId: dID}, o...)
	})
	if err != nil || resp.(*keywardv1.RevealKeyResponse).GetSecret() != dSecret {
		t.Errorf("RevealKey D: %v", err)
	}
	rest(admin, "POST", "/v1/keys/"+aID+":reveal", `{}`, 400)

	// Leaks: by secret, with the secret quoted in the reason; by key id;
	// a secret no key has; a secret given as the key id.
	rest(admin, "POST", "/v1/keys:reportLeaked", `{"secret": "`+cSecret+`", "action": "ACTION_REGENERATE",
		"reason": "found in a public gist: `+cSecret+` and `+a2Secret+`"}`, 200)
	c2Secret := secretOf(h, "POST /v1/keys:reportLeaked", 0)
	rest(admin, "POST", "/v1/keys:reportLeaked", `{"keyId": "`+dID+`", "action": "ACTION_DISABLE", "reason": "pasted in chat: `+dSecret+`"}`, 200)
	rest(admin, "POST", "/v1/keys:reportLeaked", `{"secret": "`+unknown+`", "action": "ACTION_DISABLE", "reason": "x"}`, 404)
	rest(admin, "POST", "/v1/keys:reportLeaked", `{"keyId": "`+a2Secret+`", "action": "ACTION_DISABLE", "reason": "x"}`, 404)
	if got := rest("", "POST", "/v1/keys:validate", `{"key": "`+cSecret+`"}`, 200); got["valid"] != false {
		t.Error("the leaked secret of C still validates")
	}
	if got := rest("", "POST", "/v1/keys:validate", `{"key": "`+dSecret+`"}`, 200); got["reason"] != "REASON_DISABLED" {
		t.Errorf("the leaked secret of D: %v, want REASON_DISABLED", got["reason"])
	}

	// Search by secret: POST :search, gRPC, and (wrongly) in a URL.
	rest(admin, "POST", "/v1/keys:search", `{"query": "`+a2Secret+`"}`, 200)
	rest(admin, "POST", "/v1/keys:search", `{"query": "`+aSecret+`"}`, 200) // in its grace period
	rest(admin, "GET", "/v1/keys?query="+url.QueryEscape(c2Secret), "", 200)
	rpc("ListKeys", admin, func(ctx context.Context, o ...grpc.CallOption) (proto.Message, error) {
		return kc.ListKeys(ctx, &keywardv1.ListKeysRequest{Query: b2Secret}, o...)
	})

	// Bad input carrying secrets, in fields that are not secrets.
	for _, body := range []string{
		`{"displayName": "bad env", "environment": "` + unknown + `"}`,
		`{"displayName": "bad scope", "scopes": ["` + unknown + `!"]}`,
		`{"displayName": "bad cidr", "allowedCidrs": ["` + unknown + `"]}`,
		`{"displayName": "bad meta", "metadata": {"` + unknown + `!": "v"}}`,
		`{"displayName": "", "description": "` + unknown + `"}`,
		`{"displayName": "bad type", "scopes": "` + unknown + `"}`,
		`{"displayName": "bad ttl", "ttl": "` + unknown + `"}`,
	} {
		rest(admin, "POST", "/v1/keys", body, 400)
	}
	_, err = rpc("UpdateKey (bad mask)", admin, func(ctx context.Context, o ...grpc.CallOption) (proto.Message, error) {
		return kc.UpdateKey(ctx, &keywardv1.UpdateKeyRequest{Key: &keywardv1.Key{KeyId: aID}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{unknown}}}, o...)
	})
	wantCode("UpdateKey with a secret as the mask", err, "InvalidArgument")
	for _, id := range []string{a2Secret, unknown} {
		_, err = rpc("GetKey (a secret as the id)", admin, func(ctx context.Context, o ...grpc.CallOption) (proto.Message, error) {
			return kc.GetKey(ctx, &keywardv1.GetKeyRequest{KeyId: id}, o...)
		})
		wantCode("GetKey with a secret as the id", err, "NotFound")
		_, err = rpc("DisableKey (a secret as the id)", admin, func(ctx context.Context, o ...grpc.CallOption) (proto.Message, error) {
			return kc.DisableKey(ctx, &keywardv1.DisableKeyRequest{KeyId: id}, o...)
		})
		wantCode("DisableKey with a secret as the id", err, "NotFound")
		_, err = rpc("ListAuditEvents (a secret as the key id)", admin, func(ctx context.Context, o ...grpc.CallOption) (proto.Message, error) {
			return kc.ListAuditEvents(ctx, &keywardv1.ListAuditEventsRequest{KeyId: id}, o...)
		})
	}

	// Failed sign-ins: a wrong admin key, a key without the admin scope,
	// a malformed token; over REST and gRPC.
	for _, token := range []string{wrongAdmin, a2Secret, garbage} {
		rest(token, "GET", "/v1/keys", "", map[string]int{wrongAdmin: 401, a2Secret: 403, garbage: 401}[token])
		rpc("ListKeys (bad credential)", token, func(ctx context.Context, o ...grpc.CallOption) (proto.Message, error) {
			return kc.ListKeys(ctx, &keywardv1.ListKeysRequest{}, o...)
		})
	}
	rest("", "GET", "/v1/keys", "", 401, "Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("admin:"+wrongAdmin)))

	// Updates, usage, disable, delete.
	rest(admin, "PATCH", "/v1/keys/"+aID, `{"description": "rotated"}`, 200)
	rest(admin, "GET", "/v1/keys/"+aID+"/usage", "", 200)
	rest(admin, "POST", "/v1/keys/"+bID+":disable", `{}`, 200)
	rest(admin, "DELETE", "/v1/keys/"+cID, "", 200)

	// The CLI, as an operator would use it.
	env := []string{"KEYWARD_SERVER=" + s.GRPCAddr}
	for _, run := range []cliRun{
		runCLI(t, "", append(env, "KEYWARD_ADMIN_KEY="+wrongAdmin), "keys", "list"),
		runCLI(t, a2Secret+"\n", append(env, "KEYWARD_ADMIN_KEY="+admin), "keys", "search", "--stdin"),
		runCLI(t, b2Secret+"\n", env, "keys", "validate"),
		runCLI(t, "", append(env, "KEYWARD_ADMIN_KEY="+admin), "keys", "get", a2Secret),
		runCLI(t, "", append(env, "KEYWARD_ADMIN_KEY="+admin), "keys", "audit", "--all"),
		runCLI(t, "", []string{"KEYWARD_ADMIN_KEY=" + admin, "KEYWARD_MASTER_KEY=" + master, "KEYWARD_POSTGRES_DSN=" + dsn}, "config", "print"),
	} {
		// Only what the CLI printed: its arguments are the test's input.
		h.add("cli", "keyward "+strings.Join(run.args[:2], " ")+": exit "+fmt.Sprint(run.code), run.stdout, run.stderr)
	}

	// The audit trail and the metrics, as Keyward serves them.
	for token := ""; ; {
		m := rest(admin, "GET", "/v1/auditEvents?page_size=1000&page_token="+token, "", 200)
		events, _ := json.MarshalIndent(m["auditEvents"], "", " ")
		h.add("audit events", events)
		token, _ = m["nextPageToken"].(string)
		if token == "" {
			break
		}
	}
	metrics := scrape(t, s)
	h.add("metrics", metrics.body)

	// Stop (which flushes the spans), then what is at rest.
	s.Stop(t)
	h.add("server log", s.Log())
	if monitor != nil {
		h.add("redis MONITOR", monitor.stop())
		h.add("redis contents", dumpRedis(t, r))
	}
	if dsn != "" {
		h.add("postgres contents", dumpPostgres(t, dsn))
	}
	files, _ := os.ReadDir(dir)
	for _, f := range files {
		raw, err := os.ReadFile(filepath.Join(dir, f.Name()))
		if err != nil {
			t.Fatal(err)
		}
		h.add("data dir "+f.Name(), raw)
	}
	verify := []string{"audit", "verify", "--data-dir", dir}
	if dsn != "" {
		verify = append(verify, "--postgres-dsn", dsn)
	}
	out, errOut, code, _ := runKeyward(t, time.Minute, verify...)
	h.add("cli", "keyward audit verify", out, errOut)
	if code != 0 {
		t.Errorf("keyward audit verify: exit %d: %s", code, errOut)
	}

	h.check(t, dsn, r != nil, []string{a2Secret, b2Secret, dSecret}, masterRaw)
	t.Logf("%d secrets minted or presented, %d spans exported, %v", len(h.secrets), h.spans, time.Since(start).Round(time.Millisecond))
}

// check scans every source for every secret and the master key, and
// checks that the hashes of live secrets are where they are expected.
func (h *hygiene) check(t *testing.T, dsn string, withRedis bool, live []string, master []byte) {
	t.Helper()
	type needle struct{ what, form string }
	exact := map[string]needle{}
	windows := map[string]needle{} // 12-character runs of each secret's body
	for secret, what := range h.secrets {
		exact[secret] = needle{what, "in clear"}
		exact[hex.EncodeToString([]byte(secret))] = needle{what, "hex-encoded"}
		exact[base64.StdEncoding.EncodeToString([]byte(secret))] = needle{what, "base64-encoded"}
		exact[base64.RawURLEncoding.EncodeToString([]byte(secret))] = needle{what, "base64url-encoded"}
		body := secret[strings.LastIndexByte(secret, '_')+1:]
		exact[body] = needle{what, "its base62 body"}
		for i := 0; i+12 <= len(body); i++ {
			windows[body[i:i+12]] = needle{what, fmt.Sprintf("characters %d-%d of its body", i+1, i+12)}
		}
	}
	for form, v := range map[string]string{
		"raw": string(master), "hex": hex.EncodeToString(master), "HEX": strings.ToUpper(hex.EncodeToString(master)),
		"base64": base64.StdEncoding.EncodeToString(master), "base64 unpadded": base64.RawStdEncoding.EncodeToString(master),
		"base64url": base64.URLEncoding.EncodeToString(master), "base64url unpadded": base64.RawURLEncoding.EncodeToString(master),
	} {
		exact[v] = needle{"the master key", form}
	}

	var sizes []string
	leaks := 0
	for _, source := range h.order {
		data := h.sources[source].Bytes()
		sizes = append(sizes, fmt.Sprintf("%s %s", source, byteSize(len(data))))
		report := func(at, n int, nd needle) {
			leaks++
			if leaks > 40 {
				return
			}
			lo, hi := max(at-80, 0), min(at+n+80, len(data))
			ctx := string(data[lo:at]) + "▇▇▇" + string(data[at+n:hi])
			t.Errorf("%s contains %s (%s): …%s…", source, nd.what, nd.form, redactAll(printable(ctx), h))
		}
		for v, nd := range exact {
			if i := bytes.Index(data, []byte(v)); i >= 0 {
				report(i, len(v), nd)
			}
		}
		seen := map[string]bool{}
		for i := 0; i+12 <= len(data); i++ {
			if nd, ok := windows[string(data[i:i+12])]; ok && !seen[nd.what] {
				seen[nd.what] = true
				report(i, 12, nd)
			}
		}
	}
	t.Logf("scanned: %s", strings.Join(sizes, ", "))
	if leaks > 0 {
		t.Errorf("%d leaks", leaks)
	}

	// Positive controls: the scan sees the data the secrets' hashes are in.
	if h.spans == 0 {
		t.Error("no spans were exported: the traces were not scanned")
	}
	for _, secret := range live {
		sum := sha256.Sum256([]byte(secret))
		what := h.secrets[secret]
		switch {
		case dsn != "":
			if !bytes.Contains(h.sources["postgres contents"].Bytes(), []byte(`\\x`+hex.EncodeToString(sum[:]))) {
				t.Errorf("the Postgres dump does not hold the SHA-256 of %s: the dump is not what is at rest", what)
			}
		default:
			found := false
			for source, b := range h.sources {
				found = found || (strings.HasPrefix(source, "data dir ") && bytes.Contains(b.Bytes(), sum[:]))
			}
			if !found {
				t.Errorf("the SQLite files do not hold the SHA-256 of %s: the scan is not seeing what is at rest", what)
			}
		}
	}
	if withRedis {
		sum := sha256.Sum256([]byte(live[0]))
		if !bytes.Contains(h.sources["redis MONITOR"].Bytes(), []byte(hex.EncodeToString(sum[:]))) {
			t.Error("Redis never saw the hash of a validated secret: the MONITOR stream is not what Keyward sent")
		}
	}
	if !strings.Contains(h.sources["server log"].String(), `"level":"DEBUG"`) {
		t.Error("the server log has no debug line: --log-level debug was not in force")
	}
}

// clearSecret registers and clears the secret field of a response meant to
// carry one.
func clearSecret(m proto.Message, h *hygiene, what string) {
	switch r := m.(type) {
	case *keywardv1.CreateKeyResponse:
		h.minted(r.GetSecret(), "a secret returned by "+what)
		r.Secret = ""
	case *keywardv1.RegenerateKeyResponse:
		h.minted(r.GetSecret(), "a secret returned by "+what)
		r.Secret = ""
	case *keywardv1.RevealKeyResponse:
		h.minted(r.GetSecret(), "a secret returned by "+what)
		r.Secret = ""
	case *keywardv1.ReportLeakedKeyResponse:
		h.minted(r.GetSecret(), "a secret returned by "+what)
		r.Secret = ""
	}
}

// secretOf returns the i-th secret (-1: the last) that responses of route returned.
func secretOf(h *hygiene, route string, i int) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var list []string
	for _, r := range h.returned {
		if r.route == route {
			list = append(list, r.secret)
		}
	}
	if i < 0 {
		i = len(list) + i
	}
	if i < 0 || i >= len(list) {
		return ""
	}
	return list[i]
}

// routeOf is path without its query string, with ids kept (they are not secrets).
func routeOf(path string) string {
	p, _, _ := strings.Cut(path, "?")
	return p
}

// redactAll replaces every known secret in s, for test messages.
func redactAll(s string, h *hygiene) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	for secret := range h.secrets {
		s = strings.ReplaceAll(s, secret, maskOf(secret))
		body := secret[strings.LastIndexByte(secret, '_')+1:]
		s = strings.ReplaceAll(s, body, "(body of "+maskOf(secret)+")")
	}
	return s
}

func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\n' || r == 0xFFFD {
			return '·'
		}
		return r
	}, s)
}

func byteSize(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%.1fMB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1fkB", float64(n)/1024)
}

// routeTemplate names path by its route: key ids become {key_id}.
func routeTemplate(path string) string {
	p := routeOf(path)
	parts := strings.Split(p, "/")
	for i, part := range parts {
		if strings.HasPrefix(part, "key_") {
			_, verb, found := strings.Cut(part, ":")
			parts[i] = "{key_id}"
			if found {
				parts[i] += ":" + verb
			}
		}
	}
	return strings.Join(parts, "/")
}

// dumpPostgres returns every row of every table in the database's public
// schema as JSON (bytea as \x-hex).
func dumpPostgres(t *testing.T, dsn string) string {
	t.Helper()
	var out strings.Builder
	rawDB(t, dsn, func(ctx context.Context, conn *pgx.Conn) {
		rows, err := conn.Query(ctx, `SELECT table_name FROM information_schema.tables
			WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1`)
		if err != nil {
			t.Fatal(err)
		}
		tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil || len(tables) == 0 {
			t.Fatalf("list tables: %v %v", tables, err)
		}
		for _, table := range tables {
			rows, err := conn.Query(ctx, `SELECT row_to_json(t)::text FROM `+pgx.Identifier{table}.Sanitize()+` t`)
			if err != nil {
				t.Fatal(err)
			}
			lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&out, "-- %s: %d rows\n%s\n", table, len(lines), strings.Join(lines, "\n"))
		}
	})
	return out.String()
}

// dumpRedis returns every key of r and its value, whatever its type.
func dumpRedis(t *testing.T, r *redisProc) string {
	t.Helper()
	var out strings.Builder
	cursor := "0"
	for range 10000 {
		reply := strings.Split(r.Do(t, "SCAN", cursor, "COUNT", "1000"), "\n")
		cursor = reply[0]
		for _, key := range reply[1:] {
			if key == "" {
				continue
			}
			var value string
			switch typ := r.Do(t, "TYPE", key); typ {
			case "string":
				value = r.Do(t, "GET", key)
			case "hash":
				value = r.Do(t, "HGETALL", key)
			case "set":
				value = r.Do(t, "SMEMBERS", key)
			case "list":
				value = r.Do(t, "LRANGE", key, "0", "-1")
			case "zset":
				value = r.Do(t, "ZRANGE", key, "0", "-1", "WITHSCORES")
			case "stream":
				value = r.Do(t, "XRANGE", key, "-", "+")
			default:
				value = "(type " + typ + ")"
			}
			fmt.Fprintf(&out, "%s = %s\n", key, value)
		}
		if cursor == "0" {
			return out.String()
		}
	}
	t.Fatal("SCAN did not end")
	return ""
}

// redisMonitor records every command a Redis executes (MONITOR).
type redisMonitor struct {
	conn net.Conn
	mu   sync.Mutex
	buf  bytes.Buffer
	done chan struct{}
}

func startRedisMonitor(t *testing.T, addr string) *redisMonitor {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("MONITOR\r\n")); err != nil {
		t.Fatal(err)
	}
	m := &redisMonitor{conn: c, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		rd := bufio.NewReader(c)
		for {
			line, err := rd.ReadBytes('\n')
			m.mu.Lock()
			m.buf.Write(line)
			m.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { c.Close() })
	return m
}

// stop ends the stream and returns what it carried.
func (m *redisMonitor) stop() []byte {
	time.Sleep(100 * time.Millisecond) // the last commands' echoes
	m.conn.Close()
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.buf.Bytes()
}
