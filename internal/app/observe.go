package app

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward/internal/abuse"
	"github.com/keyward/keyward/internal/cache"
	"github.com/keyward/keyward/internal/server"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/store/postgres"
	"github.com/keyward/keyward/internal/telemetry"
	"github.com/keyward/keyward/internal/usage"
	"github.com/keyward/keyward/internal/validate"
)

// observability is one instance's metrics and (optional) tracing, and the
// places they are attached: docs/observability.md describes what they show.
type observability struct {
	metrics *telemetry.Metrics
	tracing *telemetry.Tracing // nil: tracing off
	log     *slog.Logger
}

// newObservability builds the metrics registry and, if the OTEL_*
// environment asks for it, the tracer provider.
func newObservability(ctx context.Context, log *slog.Logger) (*observability, error) {
	tr, err := telemetry.NewTracing(ctx, telemetry.TracingOptions{})
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	if tr != nil {
		log.InfoContext(ctx, "tracing on: spans go to the OTLP endpoint of the OTEL_* environment")
	}
	return &observability{metrics: telemetry.NewMetrics(), tracing: tr, log: log}, nil
}

// store observes st (timing, failures, spans) and the Postgres pool.
func (o *observability) store(st store.Store) store.Store {
	system := "sqlite"
	if pg, ok := st.(*postgres.Store); ok {
		system = "postgresql"
		o.metrics.WatchPostgresPool(pg.Stat)
	}
	return telemetry.Store(st, o.metrics, o.tracing, system)
}

// redis counts rdb's failures, exports its pool and traces its commands.
func (o *observability) redis(rdb redis.UniversalClient) {
	o.metrics.WatchRedis(rdb)
	if err := o.tracing.InstrumentRedis(rdb); err != nil {
		o.log.Warn("redis commands are not traced", "err", err)
	}
}

// cache exports the invalidation lease (only with Redis, which has one).
func (o *observability) cache(c *cache.Cache, withRedis bool) {
	if withRedis {
		o.metrics.WatchLease(c.LeaseAge)
	}
}

// usage exports the verifications the usage recorder could not count.
func (o *observability) usage(r *usage.Recorder) {
	o.metrics.Registry().MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "keyward_usage_dropped_total",
		Help: "Verifications left out of key usage counts: more keys used between two flushes than the recorder holds, or counts held too long while the store failed.",
	}, func() float64 { return float64(r.Dropped()) }))
}

// verifier reports every verdict of Validate, Check and forward-auth.
func (o *observability) verifier(v *validate.Verifier) { v.Observe(o.metrics) }

// server instruments both listeners and serves /metrics on the HTTP one.
// /metrics needs no credential, like /healthz: Prometheus scrapers rarely
// send one, and it shows only counts under fixed labels. Deployments whose
// HTTP listener is public should not route /metrics from outside.
func (o *observability) server(so *server.Options) {
	so.Observer = o.metrics
	so.GRPCOptions = append(so.GRPCOptions, o.tracing.ServerOptions()...)
	so.DialOptions = append(so.DialOptions, o.tracing.DialOptions()...)
	if o.tracing != nil {
		so.WrapHTTP = o.tracing.HTTP
	}
	routes := so.Routes
	so.Routes = func(mux *http.ServeMux) {
		mux.Handle("GET /metrics", o.metrics.Handler())
		if routes != nil {
			routes(mux)
		}
	}
}

// shutdown sends the spans still buffered and stops the exporter.
func (o *observability) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := o.tracing.Shutdown(ctx); err != nil {
		o.log.Warn("tracing: could not send the last spans", "err", err)
	}
}

// abuse exports what the failed-validation throttle and the refusal floor
// did (docs/abuse.md).
func (o *observability) abuse(t *abuse.Throttle, f *abuse.Floor) {
	reg := o.metrics.Registry()
	for s := range abuse.NumSurfaces {
		labels := prometheus.Labels{"surface": s.String()}
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "keyward_abuse_throttled_total",
			Help:        "Validations answered 429 without a lookup: their client address had no budget of failed validations left.",
			ConstLabels: labels,
		}, func() float64 { return float64(t.Throttled(s)) }))
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "keyward_abuse_failures_total",
			Help:        "Failed validations counted against their client address's budget, on throttled surfaces.",
			ConstLabels: labels,
		}, func() float64 { return float64(t.Failures(s)) }))
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "keyward_abuse_addresses",
		Help: "Client addresses whose failed validations are remembered (bounded).",
	}, func() float64 { return float64(t.Addresses()) }))
	if f == nil {
		return
	}
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "keyward_refusals_held_total",
		Help: "Refusals of unknown, disabled, deleted or expired keys held until --abuse-refusal-floor after their arrival.",
	}, func() float64 { return float64(f.Held()) }))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "keyward_refusals_late_total",
		Help: "Refusals of unknown, disabled, deleted or expired keys that took longer than --abuse-refusal-floor, whose timing may show: raise the floor if this grows.",
	}, func() float64 { return float64(f.Late()) }))
}
