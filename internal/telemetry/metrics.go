package telemetry

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/codes"

	"github.com/keyward/keyward/internal/cache"
	"github.com/keyward/keyward/internal/validate"
)

// Metrics is one instance's Prometheus registry and the observers that feed
// it. It implements validate.Observer, cache.Observer and server.Observer.
// Every method is safe for concurrent use; the ones called per request
// allocate nothing once a label combination has been seen.
type Metrics struct {
	reg *prometheus.Registry

	rpcHandled *prometheus.CounterVec
	rpcSeconds *prometheus.HistogramVec
	rpc        seriesMap[rpcKey]

	httpRequests *prometheus.CounterVec
	httpSeconds  *prometheus.HistogramVec
	http         seriesMap[httpKey]

	verdictVec *prometheus.CounterVec
	// verdicts[entry][reason] for the reasons validate names; the last
	// column counts "cannot tell" (an error).
	verdicts [validate.NumEntries][maxReason + 2]prometheus.Counter

	lookups       [cache.NumTiers][cache.NumResults]prometheus.Counter
	invalidations [2]prometheus.Observer // [0] lease waited out, [1] acknowledged

	storeErrors  *prometheus.CounterVec
	storeSeconds *prometheus.HistogramVec
	redisErrors  *prometheus.CounterVec
}

// maxReason bounds the validate.Reason values given a series up front;
// larger ones (none today) are resolved per call.
const maxReason = 31

// latencyBuckets span a Validate answered from memory (tens of
// microseconds) to a write that waited out an instance's lease.
var latencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// NewMetrics returns a registry with the Go runtime and process collectors
// and every Keyward metric; the label combinations known up front (verdicts,
// cache lookups) start at zero, so rates and alerts work from the first
// scrape.
func NewMetrics() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	f := factory{m.reg}

	m.rpcHandled = f.counterVec("keyward_grpc_server_handled_total",
		"gRPC calls completed, by service, method and status code. REST calls are counted here too: the gateway calls the gRPC listener.",
		"service", "method", "code")
	m.rpcSeconds = f.histogramVec("keyward_grpc_server_handling_seconds",
		"Time from receiving a gRPC call to its answer, by service, method and status code.",
		latencyBuckets, "service", "method", "code")
	m.httpRequests = f.counterVec("keyward_http_requests_total",
		"HTTP requests answered, by route pattern (never the raw path), method and status.",
		"route", "method", "code")
	m.httpSeconds = f.histogramVec("keyward_http_request_duration_seconds",
		"Time to answer an HTTP request, by route pattern, method and status.",
		latencyBuckets, "route", "method", "code")

	m.verdictVec = f.counterVec("keyward_validations_total",
		"Verdicts on presented keys, by entry point (validate: keyward.v1 Validate over gRPC or REST; envoy_check; forward_auth) "+
			"and reason (valid or why the key was refused; malformed includes a missing credential; error: the verifier could not tell and refused).",
		"entry", "reason")
	for e := validate.Entry(0); e < validate.NumEntries; e++ {
		for r := 1; r <= maxReason; r++ {
			if name := validate.Reason(r).String(); !strings.HasPrefix(name, "reason_") {
				m.verdicts[e][r] = m.verdictVec.WithLabelValues(e.String(), name)
			}
		}
		m.verdicts[e][maxReason+1] = m.verdictVec.WithLabelValues(e.String(), "error")
	}

	lookups := f.counterVec("keyward_cache_lookups_total",
		"Key lookups by tier (local: in process; redis; store: the source of truth) and result "+
			"(hit; miss; bypass: the tier was not trusted, in process while the lease is stale, in Redis while a write is in progress; error). "+
			"For the store, hit means the key exists and miss that it does not. Concurrent misses of one key share one lookup and count once.",
		"tier", "result")
	for t := cache.Tier(0); t < cache.NumTiers; t++ {
		for r := cache.Result(0); r < cache.NumResults; r++ {
			if t == cache.TierStore && r == cache.Bypass || t == cache.TierLocal && r == cache.Error {
				continue // the store is always trusted; the in-process map cannot fail
			}
			m.lookups[t][r] = lookups.WithLabelValues(t.String(), r.String())
		}
	}
	inval := f.histogramVec("keyward_cache_invalidation_wait_seconds",
		"How long a write waited, after publishing its invalidation, until every instance that received it acknowledged "+
			"(outcome acked) or, missing an acknowledgement, until the silent instances' leases had surely run out (outcome lease_expired). "+
			"This is the revocation lag a write adds; only with Redis.",
		[]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}, "outcome")
	m.invalidations[0] = inval.WithLabelValues("lease_expired")
	m.invalidations[1] = inval.WithLabelValues("acked")

	m.storeErrors = f.counterVec("keyward_store_errors_total",
		"Store calls that failed, by operation and kind (unavailable, timeout, internal). Answers such as not found, already exists or an etag mismatch are not errors.",
		"op", "kind")
	m.storeSeconds = f.histogramVec("keyward_store_duration_seconds",
		"Time of one store call, by operation.", latencyBuckets, "op")
	m.redisErrors = f.counterVec("keyward_redis_errors_total",
		"Redis commands that failed, by command (dial: a connection could not be made). A missing key is not an error.",
		"command")
	return m
}

// Registry is the instance's registry, for further collectors and tests.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus text format (or
// OpenMetrics, when the scraper asks for it).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		Registry:          m.reg, // counts its own scrape errors
		EnableOpenMetrics: true,
	})
}

// Verdict implements validate.Observer.
func (m *Metrics) Verdict(e validate.Entry, r validate.Reason, err error) {
	if e >= validate.NumEntries {
		m.verdictVec.WithLabelValues(e.String(), reasonLabel(r, err)).Inc()
		return
	}
	col := int(r)
	if err != nil {
		col = maxReason + 1
	}
	if col >= 0 && col < len(m.verdicts[e]) {
		if c := m.verdicts[e][col]; c != nil {
			c.Inc()
			return
		}
	}
	m.verdictVec.WithLabelValues(e.String(), reasonLabel(r, err)).Inc()
}

func reasonLabel(r validate.Reason, err error) string {
	if err != nil {
		return "error"
	}
	return r.String()
}

// Lookup implements cache.Observer.
func (m *Metrics) Lookup(t cache.Tier, r cache.Result) {
	if t < cache.NumTiers && r < cache.NumResults {
		if c := m.lookups[t][r]; c != nil {
			c.Inc()
		}
	}
}

// Invalidation implements cache.Observer.
func (m *Metrics) Invalidation(wait time.Duration, acked bool) {
	i := 0
	if acked {
		i = 1
	}
	m.invalidations[i].Observe(wait.Seconds())
}

// RPC records one finished gRPC call (server.Observer). method is the full
// method name, which gRPC only passes for registered methods, so the label
// set is bounded.
func (m *Metrics) RPC(method string, code codes.Code, d time.Duration) {
	s := m.rpc.get(rpcKey{method, code}, func(k rpcKey) *series {
		service, name := splitMethod(k.method)
		lv := []string{service, name, k.code.String()}
		return &series{count: m.rpcHandled.WithLabelValues(lv...), seconds: m.rpcSeconds.WithLabelValues(lv...)}
	})
	s.count.Inc()
	s.seconds.Observe(d.Seconds())
}

// HTTP records one finished HTTP request (server.Observer). route is the
// pattern that matched, never the request's path.
func (m *Metrics) HTTP(route, method string, status int, d time.Duration) {
	s := m.http.get(httpKey{route, httpMethod(method), status}, func(k httpKey) *series {
		lv := []string{k.route, k.method, strconv.Itoa(k.status)}
		return &series{count: m.httpRequests.WithLabelValues(lv...), seconds: m.httpSeconds.WithLabelValues(lv...)}
	})
	s.count.Inc()
	s.seconds.Observe(d.Seconds())
}

// httpMethod keeps the method label bounded: a client may send any token.
func httpMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return m
	}
	return "OTHER"
}

func splitMethod(full string) (service, method string) {
	full = strings.TrimPrefix(full, "/")
	if i := strings.LastIndexByte(full, '/'); i >= 0 {
		return full[:i], full[i+1:]
	}
	return "unknown", full
}

type rpcKey struct {
	method string
	code   codes.Code
}

type httpKey struct {
	route, method string
	status        int
}

// series is one label combination of a counter and its histogram.
type series struct {
	count   prometheus.Counter
	seconds prometheus.Observer
}

// seriesMap resolves label combinations to series once. Reads are a map
// lookup in an immutable map (no lock, no allocation); a new combination
// copies the map. Combinations are few and stop growing after warm-up.
type seriesMap[K comparable] struct {
	m  atomic.Pointer[map[K]*series]
	mu sync.Mutex
}

func (s *seriesMap[K]) get(k K, mk func(K) *series) *series {
	if m := s.m.Load(); m != nil {
		if v, ok := (*m)[k]; ok {
			return v
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.m.Load()
	if old != nil {
		if v, ok := (*old)[k]; ok {
			return v
		}
	}
	next := make(map[K]*series, 1+lenOf(old))
	if old != nil {
		for kk, v := range *old {
			next[kk] = v
		}
	}
	v := mk(k)
	next[k] = v
	s.m.Store(&next)
	return v
}

func lenOf[K comparable](m *map[K]*series) int {
	if m == nil {
		return 0
	}
	return len(*m)
}

// factory registers metrics on one registry.
type factory struct{ reg prometheus.Registerer }

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(v)
	return v
}

func (f factory) histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	v := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
	f.reg.MustRegister(v)
	return v
}
