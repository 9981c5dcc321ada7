package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/redis/go-redis/extra/redisotel/v9"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
)

// TracingOptions say whether and where to send spans.
type TracingOptions struct {
	// Getenv reads the OTEL_* variables; nil is os.Getenv.
	Getenv func(string) string
	// Exporter, if set, turns tracing on whatever the environment says and
	// receives every span as it ends (tests pass tracetest's in-memory one).
	Exporter sdktrace.SpanExporter
}

// Tracing is OpenTelemetry tracing for one instance: its own tracer
// provider, never the global one. A nil *Tracing is tracing off; all its
// methods then do nothing.
type Tracing struct {
	tp   *sdktrace.TracerProvider
	prop propagation.TextMapPropagator
}

// TracingEnabled reports whether the environment asks for traces: an OTLP
// endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or OTEL_TRACES_EXPORTER is otlp; and
// neither OTEL_SDK_DISABLED=true nor OTEL_TRACES_EXPORTER=none says no.
func TracingEnabled(getenv func(string) string) bool {
	exporter := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER"))
	switch {
	case strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true"), exporter == "none":
		return false
	case exporter == "otlp":
		return true
	}
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// NewTracing returns nil (tracing off) unless o.Exporter is set or the
// environment asks for traces. The OTLP exporter is configured by the
// standard variables (endpoint, headers, TLS, timeout, compression);
// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL choose
// grpc or http/protobuf (the default). Sampling follows OTEL_TRACES_SAMPLER
// (default: parent-based, always on); OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES name the instance (service.name defaults to
// keyward). W3C traceparent is read from and passed on with every call.
func NewTracing(ctx context.Context, o TracingOptions) (*Tracing, error) {
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	var proc sdktrace.SpanProcessor
	switch {
	case o.Exporter != nil:
		proc = sdktrace.NewSimpleSpanProcessor(o.Exporter)
	case TracingEnabled(getenv):
		exp, err := otlpExporter(ctx, getenv)
		if err != nil {
			return nil, err
		}
		proc = sdktrace.NewBatchSpanProcessor(exp)
	default:
		return nil, nil
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", "keyward")),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES win
		resource.WithTelemetrySDK(),
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("tracing resource: %w", err)
	}
	return &Tracing{
		tp:   sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(proc), sdktrace.WithResource(res)),
		prop: propagation.TraceContext{},
	}, nil
}

func otlpExporter(ctx context.Context, getenv func(string) string) (sdktrace.SpanExporter, error) {
	protocol := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if protocol == "" {
		protocol = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	var (
		exp sdktrace.SpanExporter
		err error
	)
	switch protocol {
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	case "", "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	default:
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL %q: want grpc or http/protobuf", protocol)
	}
	if err != nil {
		return nil, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	return exp, nil
}

// Tracer returns a tracer of the instance's provider; nil when off.
func (t *Tracing) Tracer(name string) trace.Tracer {
	if t == nil {
		return nil
	}
	return t.tp.Tracer(name)
}

// ServerOptions trace every gRPC call the server receives.
func (t *Tracing) ServerOptions() []grpc.ServerOption {
	if t == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(t.grpcOptions()...))}
}

// DialOptions trace, and pass the trace context on, for the REST gateway's
// calls to the gRPC listener.
func (t *Tracing) DialOptions() []grpc.DialOption {
	if t == nil {
		return nil
	}
	return []grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler(t.grpcOptions()...))}
}

func (t *Tracing) grpcOptions() []otelgrpc.Option {
	// Message events carry sizes only, never contents; metrics stay with
	// Prometheus, so OpenTelemetry's meter is a no-op.
	return []otelgrpc.Option{
		otelgrpc.WithTracerProvider(t.tp),
		otelgrpc.WithPropagators(t.prop),
		otelgrpc.WithMeterProvider(metricnoop.NewMeterProvider()),
	}
}

// HTTP traces every HTTP request. The span is named by the method when it
// starts; the server renames it to "METHOD route" once the route is known.
// otelhttp records the path, but neither the query string nor headers.
func (t *Tracing) HTTP(h http.Handler) http.Handler {
	if t == nil {
		return h
	}
	return otelhttp.NewHandler(h, "http",
		otelhttp.WithTracerProvider(t.tp),
		otelhttp.WithPropagators(t.prop),
		otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method }),
	)
}

// InstrumentRedis traces rdb's commands, without their arguments (hashes,
// cached snapshots) and without caller lookups.
func (t *Tracing) InstrumentRedis(rdb redis.UniversalClient) error {
	if t == nil {
		return nil
	}
	return redisotel.InstrumentTracing(rdb,
		redisotel.WithTracerProvider(t.tp),
		redisotel.WithDBStatement(false),
		redisotel.WithCallerEnabled(false),
	)
}

// Shutdown sends the spans still buffered and stops the exporter.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.tp.Shutdown(ctx)
}
