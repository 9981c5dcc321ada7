package telemetry_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/store/postgres"
	"github.com/keyward/keyward/internal/telemetry"
	"github.com/keyward/keyward/internal/testenv"
)

func TestTracingEnabled(t *testing.T) {
	for _, c := range []struct {
		name string
		env  map[string]string
		want bool
	}{
		{"off/nothing set", nil, false},
		{"on/endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, true},
		{"on/traces endpoint", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, true},
		{"on/exporter otlp", map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true},
		{"off/exporter none", map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, false},
		{"off/sdk disabled", map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, false},
		{"off/metrics endpoint only", map[string]string{"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://collector:4318"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := telemetry.TracingEnabled(func(k string) string { return c.env[k] }); got != c.want {
				t.Errorf("TracingEnabled = %v, want %v", got, c.want)
			}
		})
	}
}

func TestNewTracing(t *testing.T) {
	ctx := context.Background()
	tr, err := telemetry.NewTracing(ctx, telemetry.TracingOptions{Getenv: func(string) string { return "" }})
	if err != nil || tr != nil {
		t.Errorf("with no OTEL_* variables: %v, %v; want nil (off)", tr, err)
	}
	// A nil Tracing is usable, and changes nothing.
	if tr.ServerOptions() != nil || tr.DialOptions() != nil || tr.Shutdown(ctx) != nil {
		t.Error("a nil Tracing adds options or fails to shut down")
	}
	_, err = telemetry.NewTracing(ctx, telemetry.TracingOptions{Getenv: func(k string) string {
		return map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}[k]
	}})
	if err == nil || !strings.Contains(err.Error(), "http/json") {
		t.Errorf("an unsupported protocol: err %v, want one naming it", err)
	}
}

// attrs flattens a span's attributes, for searching them.
func attrs(kvs []attribute.KeyValue) string {
	var b strings.Builder
	for _, kv := range kvs {
		fmt.Fprintf(&b, "%s=%s ", kv.Key, kv.Value.Emit())
	}
	return b.String()
}

func TestStoreSpans(t *testing.T) {
	ctx := context.Background()
	exp := tracetest.NewInMemoryExporter()
	tr, err := telemetry.NewTracing(ctx, telemetry.TracingOptions{Exporter: exp})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Shutdown(ctx)
	f := &fakeStore{}
	st := telemetry.Store(f, telemetry.NewMetrics(), tr, "postgresql")

	pctx, parent := tr.Tracer("test").Start(ctx, "parent")
	st.Get(pctx, "key_secretive_id")
	f.err = fmt.Errorf("get: %w: dial tcp 10.0.0.7:5432: password=hunter2", keys.ErrUnavailable)
	st.Get(pctx, "key_secretive_id")
	parent.End()

	spans := exp.GetSpans()
	if len(spans) != 3 {
		t.Fatalf("%d spans, want 3 (two store.get and the parent)", len(spans))
	}
	for i, s := range spans[:2] {
		if s.Name != "store.get" || s.Parent.SpanID() != parent.SpanContext().SpanID() {
			t.Errorf("span %d: %q with parent %v, want store.get under the parent", i, s.Name, s.Parent.SpanID())
		}
		a := attrs(s.Attributes)
		if !strings.Contains(a, "db.system.name=postgresql") || !strings.Contains(a, "db.operation.name=get") {
			t.Errorf("span %d attributes %q lack the system and operation", i, a)
		}
		if strings.Contains(a, "secretive") || strings.Contains(s.Status.Description, "hunter2") {
			t.Errorf("span %d records an argument or the driver's message: %q, status %q", i, a, s.Status.Description)
		}
	}
	if spans[0].Status.Code == otelcodes.Error {
		t.Error("a successful call's span is marked as an error")
	}
	if spans[1].Status.Code != otelcodes.Error || spans[1].Status.Description != "unavailable" {
		t.Errorf("failed call's status = %v %q, want Error \"unavailable\"", spans[1].Status.Code, spans[1].Status.Description)
	}
}

func TestRedisMetricsAndSpans(t *testing.T) {
	addr := testenv.Redis(t)
	ctx := context.Background()
	exp := tracetest.NewInMemoryExporter()
	tr, err := telemetry.NewTracing(ctx, telemetry.TracingOptions{Exporter: exp})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Shutdown(ctx)
	m := telemetry.NewMetrics()
	rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{addr}})
	defer rdb.Close()
	m.WatchRedis(rdb)
	if err := tr.InstrumentRedis(rdb); err != nil {
		t.Fatal(err)
	}
	secretish := "kw:test:" + t.Name() + ":deadbeefcafe"
	if err := rdb.Get(ctx, secretish).Err(); err != redis.Nil {
		t.Fatalf("GET of a missing key: %v, want redis.Nil", err)
	}
	rdb.Do(ctx, "NOSUCHCOMMAND") // fails: counted
	reg := m.Registry()
	if v, ok := value(t, reg, "keyward_redis_errors_total", map[string]string{"command": "get"}); ok && v != 0 {
		t.Errorf("a missing key counted as a Redis error")
	}
	if got := mustValue(t, reg, "keyward_redis_errors_total", map[string]string{"command": "nosuchcommand"}); got != 1 {
		t.Errorf("failed commands = %v, want 1", got)
	}
	if got := mustValue(t, reg, "keyward_redis_pool_connections", nil); got < 1 {
		t.Errorf("pool connections = %v, want at least 1", got)
	}
	if _, ok := value(t, reg, "keyward_redis_pool_hits_total", nil); !ok {
		t.Error("no keyward_redis_pool_hits_total")
	}
	var sawGet bool
	for _, s := range exp.GetSpans() {
		sawGet = sawGet || s.Name == "get"
		if a := attrs(s.Attributes); strings.Contains(a, "deadbeef") {
			t.Errorf("span %q records a command's arguments: %s", s.Name, a)
		}
	}
	if !sawGet {
		t.Errorf("no span for GET among %d spans", len(exp.GetSpans()))
	}

	down := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{"127.0.0.1:1"}, MaxRetries: -1})
	defer down.Close()
	m2 := telemetry.NewMetrics() // one Redis client per instance
	m2.WatchRedis(down)
	down.Ping(ctx)
	if got := mustValue(t, m2.Registry(), "keyward_redis_errors_total", map[string]string{"command": "dial"}); got < 1 {
		t.Errorf("dial errors = %v, want at least 1", got)
	}
}

func TestPostgresPoolCollector(t *testing.T) {
	dsn := testenv.Postgres(t)
	ctx := context.Background()
	st, err := postgres.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m := telemetry.NewMetrics()
	m.WatchPostgresPool(st.Stat)
	if err := st.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	reg := m.Registry()
	if got := mustValue(t, reg, "keyward_postgres_pool_max_connections", nil); got < 1 {
		t.Errorf("max connections = %v, want at least 1", got)
	}
	if got := mustValue(t, reg, "keyward_postgres_pool_acquires_total", nil); got < 1 {
		t.Errorf("acquires = %v, want at least 1 (migrations and a ping ran)", got)
	}
	if got := mustValue(t, reg, "keyward_postgres_pool_connections", nil); got < 1 {
		t.Errorf("connections = %v, want at least 1", got)
	}
}
