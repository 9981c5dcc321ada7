package telemetry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc/codes"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/cache"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/server"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/telemetry"
	"github.com/keyward/keyward/internal/validate"
)

// Metrics is each observer interface it is wired as.
var (
	_ validate.Observer = (*telemetry.Metrics)(nil)
	_ cache.Observer    = (*telemetry.Metrics)(nil)
	_ server.Observer   = (*telemetry.Metrics)(nil)
)

// value is the value of the one series of name with exactly labels (a
// counter's value, a gauge's, or a histogram's sample count); ok is false
// when there is no such series.
func value(t *testing.T, reg prometheus.Gatherer, name string, labels map[string]string) (v float64, ok bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !sameLabels(m.GetLabel(), labels) {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue(), true
			case m.Gauge != nil:
				return m.GetGauge().GetValue(), true
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount()), true
			}
		}
	}
	return 0, false
}

func sameLabels(got []*dto.LabelPair, want map[string]string) bool {
	if len(got) != len(want) {
		return false
	}
	for _, l := range got {
		if v, ok := want[l.GetName()]; !ok || v != l.GetValue() {
			return false
		}
	}
	return true
}

func mustValue(t *testing.T, reg prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	v, ok := value(t, reg, name, labels)
	if !ok {
		t.Fatalf("no series %s%v", name, labels)
	}
	return v
}

func TestVerdictsByEntryAndReason(t *testing.T) {
	m := telemetry.NewMetrics()
	reg := m.Registry()
	// Every entry and known reason starts at zero.
	for e := validate.Entry(0); e < validate.NumEntries; e++ {
		for _, r := range []string{"valid", "not_found", "malformed", "disabled", "expired", "insufficient_scope", "wrong_environment", "error"} {
			if v := mustValue(t, reg, "keyward_validations_total", map[string]string{"entry": e.String(), "reason": r}); v != 0 {
				t.Errorf("%s/%s starts at %v", e, r, v)
			}
		}
	}
	m.Verdict(validate.EntryValidate, validate.ReasonValid, nil)
	m.Verdict(validate.EntryValidate, validate.ReasonValid, nil)
	m.Verdict(validate.EntryCheck, validate.ReasonDisabled, nil)
	m.Verdict(validate.EntryForwardAuth, 0, errors.New("store down"))
	m.Verdict(validate.EntryValidate, validate.Reason(200), nil) // beyond the table: resolved per call
	for _, c := range []struct {
		entry, reason string
		want          float64
	}{
		{"validate", "valid", 2},
		{"envoy_check", "disabled", 1},
		{"forward_auth", "error", 1},
		{"forward_auth", "valid", 0},
		{"validate", "reason_200", 1},
	} {
		if got := mustValue(t, reg, "keyward_validations_total", map[string]string{"entry": c.entry, "reason": c.reason}); got != c.want {
			t.Errorf("validations{%s,%s} = %v, want %v", c.entry, c.reason, got, c.want)
		}
	}
}

func TestCacheLookupsAndInvalidations(t *testing.T) {
	m := telemetry.NewMetrics()
	reg := m.Registry()
	m.Lookup(cache.TierLocal, cache.Hit)
	m.Lookup(cache.TierLocal, cache.Hit)
	m.Lookup(cache.TierRedis, cache.Bypass)
	m.Lookup(cache.TierStore, cache.Error)
	m.Invalidation(3*time.Millisecond, true)
	m.Invalidation(260*time.Millisecond, false)
	m.Invalidation(time.Millisecond, true)
	for _, c := range []struct {
		tier, result string
		want         float64
	}{
		{"local", "hit", 2}, {"local", "miss", 0}, {"redis", "bypass", 1}, {"store", "error", 1}, {"store", "hit", 0},
	} {
		if got := mustValue(t, reg, "keyward_cache_lookups_total", map[string]string{"tier": c.tier, "result": c.result}); got != c.want {
			t.Errorf("lookups{%s,%s} = %v, want %v", c.tier, c.result, got, c.want)
		}
	}
	if _, ok := value(t, reg, "keyward_cache_lookups_total", map[string]string{"tier": "local", "result": "error"}); ok {
		t.Error("a local/error series exists; the in-process tier cannot fail")
	}
	if got := mustValue(t, reg, "keyward_cache_invalidation_wait_seconds", map[string]string{"outcome": "acked"}); got != 2 {
		t.Errorf("acked invalidations = %v, want 2", got)
	}
	if got := mustValue(t, reg, "keyward_cache_invalidation_wait_seconds", map[string]string{"outcome": "lease_expired"}); got != 1 {
		t.Errorf("lease_expired invalidations = %v, want 1", got)
	}
}

func TestRPCAndHTTPSeries(t *testing.T) {
	m := telemetry.NewMetrics()
	reg := m.Registry()
	m.RPC("/keyward.v1.KeyService/Validate", codes.OK, time.Millisecond)
	m.RPC("/keyward.v1.KeyService/Validate", codes.OK, time.Millisecond)
	m.RPC("/keyward.v1.KeyService/GetKey", codes.NotFound, time.Millisecond)
	m.HTTP("/v1/keys/{key_id}", "GET", 404, time.Millisecond)
	m.HTTP("/v1/auth", "BREW", 401, time.Millisecond) // an unknown method is "OTHER"
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"keyward_grpc_server_handled_total", map[string]string{"service": "keyward.v1.KeyService", "method": "Validate", "code": "OK"}, 2},
		{"keyward_grpc_server_handling_seconds", map[string]string{"service": "keyward.v1.KeyService", "method": "Validate", "code": "OK"}, 2},
		{"keyward_grpc_server_handled_total", map[string]string{"service": "keyward.v1.KeyService", "method": "GetKey", "code": "NotFound"}, 1},
		{"keyward_http_requests_total", map[string]string{"route": "/v1/keys/{key_id}", "method": "GET", "code": "404"}, 1},
		{"keyward_http_request_duration_seconds", map[string]string{"route": "/v1/keys/{key_id}", "method": "GET", "code": "404"}, 1},
		{"keyward_http_requests_total", map[string]string{"route": "/v1/auth", "method": "OTHER", "code": "401"}, 1},
	} {
		if got := mustValue(t, reg, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

// TestHotPathAllocatesNothing: the observers run on every Validate, Check
// and forward-auth request.
func TestHotPathAllocatesNothing(t *testing.T) {
	m := telemetry.NewMetrics()
	m.RPC("/keyward.v1.KeyService/Validate", codes.OK, time.Millisecond)
	m.HTTP("/v1/auth", "GET", 200, time.Millisecond)
	for name, f := range map[string]func(){
		"Verdict":      func() { m.Verdict(validate.EntryCheck, validate.ReasonValid, nil) },
		"Lookup":       func() { m.Lookup(cache.TierLocal, cache.Hit) },
		"RPC":          func() { m.RPC("/keyward.v1.KeyService/Validate", codes.OK, time.Millisecond) },
		"HTTP":         func() { m.HTTP("/v1/auth", "GET", 200, time.Millisecond) },
		"Invalidation": func() { m.Invalidation(time.Millisecond, true) },
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocations per call, want 0", name, n)
		}
	}
}

func TestLeaseAge(t *testing.T) {
	m := telemetry.NewMetrics()
	age, ok := 30*time.Millisecond, true
	m.WatchLease(func() (time.Duration, bool) { return age, ok })
	if got := mustValue(t, m.Registry(), "keyward_cache_lease_age_seconds", nil); got != 0.03 {
		t.Errorf("lease age = %v, want 0.03", got)
	}
	ok = false
	if got := mustValue(t, m.Registry(), "keyward_cache_lease_age_seconds", nil); !math.IsInf(got, 1) {
		t.Errorf("lease age without a confirmed heartbeat = %v, want +Inf", got)
	}
}

// TestHandlerServesTextFormat scrapes the handler as Prometheus does and
// parses the answer; the instance's own metrics, the Go runtime's and the
// process's are there, and two instances do not share a registry.
func TestHandlerServesTextFormat(t *testing.T) {
	a, b := telemetry.NewMetrics(), telemetry.NewMetrics()
	a.Verdict(validate.EntryValidate, validate.ReasonNotFound, nil)
	srv := httptest.NewServer(a.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type = %q, want text/plain…", ct)
	}
	body, _ := io.ReadAll(resp.Body)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	var names []string
	for n := range families {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, want := range []string{"go_goroutines", "process_cpu_seconds_total", "keyward_validations_total", "keyward_cache_lookups_total"} {
		if families[want] == nil {
			t.Errorf("no %s in %v", want, names)
		}
	}
	if got := mustValue(t, b.Registry(), "keyward_validations_total", map[string]string{"entry": "validate", "reason": "not_found"}); got != 0 {
		t.Errorf("a second instance sees the first one's verdicts: %v", got)
	}
}

// fakeStore fails each call with the error its test sets; the methods it
// does not define are not called.
type fakeStore struct {
	store.Store
	err error
}

func (f *fakeStore) Get(context.Context, string) (*keys.Key, error) { return nil, f.err }
func (f *fakeStore) Update(_ context.Context, _ string, fn func(*keys.Key) error, _ store.Audit) (*keys.Key, *keys.Key, error) {
	if err := fn(&keys.Key{}); err != nil {
		return nil, nil, fmt.Errorf("update: %w", err)
	}
	return nil, nil, f.err
}

func TestStoreErrorKinds(t *testing.T) {
	m := telemetry.NewMetrics()
	f := &fakeStore{}
	st := telemetry.Store(f, m, nil, "sqlite")
	ctx := context.Background()
	for _, err := range []error{
		nil,
		fmt.Errorf("get: %w", keys.ErrNotFound), // an answer
		fmt.Errorf("get: %w", keys.ErrUnavailable),
		fmt.Errorf("get: %w", context.DeadlineExceeded),
		fmt.Errorf("get: %w", context.Canceled), // the caller left
		errors.New("driver: bad things"),
	} {
		f.err = err
		st.Get(ctx, "key_x")
	}
	refused := errors.New("etag mismatch")
	st.Update(ctx, "key_x", func(*keys.Key) error { return refused }, store.Audit{Action: audit.ActionUpdate}) // the caller's refusal
	f.err = fmt.Errorf("update: %w", keys.ErrUnavailable)
	st.Update(ctx, "key_x", func(*keys.Key) error { return nil }, store.Audit{Action: audit.ActionUpdate})

	reg := m.Registry()
	for _, c := range []struct {
		op, kind string
		want     float64
	}{
		{"get", "unavailable", 1}, {"get", "timeout", 1}, {"get", "internal", 1}, {"update", "unavailable", 1},
	} {
		if got := mustValue(t, reg, "keyward_store_errors_total", map[string]string{"op": c.op, "kind": c.kind}); got != c.want {
			t.Errorf("store errors{%s,%s} = %v, want %v", c.op, c.kind, got, c.want)
		}
	}
	if _, ok := value(t, reg, "keyward_store_errors_total", map[string]string{"op": "update", "kind": "internal"}); ok {
		t.Error("the update callback's own refusal was counted as a store error")
	}
	if got := mustValue(t, reg, "keyward_store_duration_seconds", map[string]string{"op": "get"}); got != 6 {
		t.Errorf("timed get calls = %v, want 6", got)
	}
}
