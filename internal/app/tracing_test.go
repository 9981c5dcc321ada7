package app_test

import (
	"context"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/app"
	"github.com/keyward/keyward/internal/config"
	"github.com/keyward/keyward/internal/keymat"
)

// collector is an OTLP/HTTP trace receiver.
type collector struct {
	mu       sync.Mutex
	spans    []*tracepb.Span
	services []string
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	var req coltracepb.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(body, &req)
	}
	if r.URL.Path != "/v1/traces" || err != nil {
		http.Error(w, "bad export", http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	for _, rs := range req.GetResourceSpans() {
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				c.services = append(c.services, a.GetValue().GetStringValue())
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			c.spans = append(c.spans, ss.GetSpans()...)
		}
	}
	c.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

// TestTracingOverOTLP runs Keyward with only the standard OTEL_* variables
// set, against a real OTLP/HTTP receiver: gRPC calls and REST calls (through
// the gateway) produce spans down to the store, a caller's W3C traceparent
// is continued, no secret is in any span, and the spans still buffered are
// sent when Keyward stops.
func TestTracingOverOTLP(t *testing.T) {
	col := &collector{}
	recv := httptest.NewServer(col)
	defer recv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", recv.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_SERVICE_NAME", "keyward-under-test")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "60000") // nothing is sent before Keyward stops

	admin, err := keymat.Generate("live")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("test", []string{"--grpc-addr=127.0.0.1:0", "--http-addr=127.0.0.1:0", "--data-dir=" + t.TempDir()},
		func(k string) string {
			if k == "KEYWARD_ADMIN_KEY" {
				return admin.String()
			}
			return ""
		})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := app.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	conn, err := grpc.NewClient(a.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := keywardv1.NewKeyServiceClient(conn)
	actx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+admin.String())
	created, err := client.CreateKey(actx, &keywardv1.CreateKeyRequest{Key: &keywardv1.Key{DisplayName: "traced"}})
	if err != nil {
		t.Fatal(err)
	}
	secret := created.GetSecret()

	// REST, continuing the caller's trace. A fresh secret, so that the
	// lookup reaches the store.
	traceID := "4bf92f3577b34da6a3ce929d0e0e4736"
	req, _ := http.NewRequest("POST", "http://"+a.HTTPAddr()+"/v1/keys:validate",
		strings.NewReader(`{"key": "`+secret+`"}`))
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "REASON_VALID") {
		t.Fatalf("REST validate: %s", body)
	}

	col.mu.Lock()
	early := len(col.spans)
	col.mu.Unlock()
	if early != 0 {
		t.Logf("%d spans arrived before stop (the batch delay is 60s)", early)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("keyward did not stop")
	}

	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.spans) == 0 {
		t.Fatal("no spans were sent by the time Keyward stopped")
	}
	for _, s := range col.services {
		if s != "keyward-under-test" {
			t.Errorf("service.name = %q, want OTEL_SERVICE_NAME's keyward-under-test", s)
		}
	}
	byID := map[string]*tracepb.Span{}
	for _, s := range col.spans {
		byID[hex.EncodeToString(s.GetSpanId())] = s
	}
	// under reports whether s descends from a span named ancestor.
	under := func(s *tracepb.Span, ancestor string) bool {
		for p := byID[hex.EncodeToString(s.GetParentSpanId())]; p != nil; p = byID[hex.EncodeToString(p.GetParentSpanId())] {
			if p.GetName() == ancestor {
				return true
			}
		}
		return false
	}
	find := func(name string, where func(*tracepb.Span) bool) *tracepb.Span {
		for _, s := range col.spans {
			if s.GetName() == name && (where == nil || where(s)) {
				return s
			}
		}
		return nil
	}
	inTrace := func(s *tracepb.Span) bool { return hex.EncodeToString(s.GetTraceId()) == traceID }

	if s := find("store.create", func(s *tracepb.Span) bool { return under(s, "keyward.v1.KeyService/CreateKey") }); s == nil {
		t.Error("no store.create span under the CreateKey server span")
	}
	httpSpan := find("POST /v1/keys:validate", inTrace)
	if httpSpan == nil {
		t.Fatalf("no HTTP span \"POST /v1/keys:validate\" in the caller's trace %s; spans: %v", traceID, names(col.spans))
	}
	if got := hex.EncodeToString(httpSpan.GetParentSpanId()); got != "00f067aa0ba902b7" {
		t.Errorf("HTTP span's parent = %s, want the caller's span 00f067aa0ba902b7", got)
	}
	if s := find("keyward.v1.KeyService/Validate", func(s *tracepb.Span) bool {
		return inTrace(s) && s.GetKind() == tracepb.Span_SPAN_KIND_SERVER && under(s, "POST /v1/keys:validate")
	}); s == nil {
		t.Errorf("no gRPC server span for Validate under the HTTP span; spans: %v", names(col.spans))
	}
	if s := find("store.get_by_hash", func(s *tracepb.Span) bool { return inTrace(s) && under(s, "keyward.v1.KeyService/Validate") }); s == nil {
		t.Errorf("no store.get_by_hash span under Validate in the caller's trace; spans: %v", names(col.spans))
	}

	t.Logf("spans: %v", names(col.spans))

	// No secret anywhere in what was exported.
	for _, s := range col.spans {
		raw, _ := proto.Marshal(s)
		for what, v := range map[string]string{"the key's secret": secret, "the admin key": admin.String()} {
			if strings.Contains(string(raw), v) {
				t.Errorf("span %q contains %s", s.GetName(), what)
			}
		}
	}
}

func names(spans []*tracepb.Span) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.GetName())
	}
	return out
}
