package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
)

// Observer is told of every finished gRPC call and HTTP request, for
// metrics. It is called on the hot path: it must be cheap and safe for
// concurrent use. method is a registered gRPC method's full name; route is
// the pattern that matched (the REST gateway's, e.g. /v1/keys/{key_id}),
// never the request's path.
type Observer interface {
	RPC(method string, code codes.Code, d time.Duration)
	HTTP(route, method string, status int, d time.Duration)
}

// RequestIDHeader carries a request's id: taken from the caller if it sent
// a usable one, generated otherwise, and returned in the response (an HTTP
// header, or gRPC header metadata; see returnRequestID for the exception).
// Every log line written for the request has it as request_id, and REST
// calls pass it on to the gRPC call they make.
const RequestIDHeader = "x-request-id"

// requestIDField is RequestIDHeader as net/http keys it (no canonicalization per call).
const requestIDField = "X-Request-Id"

type requestKey struct{}

// request is what the server knows about the request a context belongs to.
type request struct {
	id string
	// route is set by the REST gateway when it matches a pattern.
	route string
}

// RequestID is the id of the request ctx belongs to; "" outside one.
func RequestID(ctx context.Context) string {
	if r, ok := ctx.Value(requestKey{}).(*request); ok {
		return r.id
	}
	return ""
}

// requestID returns the caller's id if it is usable in a header and a log
// line, else a new random one.
func requestID(given string) string {
	if n := len(given); n > 0 && n <= 128 {
		ok := true
		for i := 0; i < n && ok; i++ {
			c := given[i]
			ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_.:/+=", c) >= 0
		}
		if ok {
			return given
		}
	}
	var b [16]byte
	rand.Read(b[:])
	var h [32]byte
	hex.Encode(h[:], b[:])
	return string(h[:])
}

// rpcRequest gives a gRPC call its id: the caller's x-request-id metadata
// (which the REST gateway sets) if usable, else a new one. given reports
// whether the caller sent one.
func rpcRequest(ctx context.Context) (_ context.Context, r *request, given bool) {
	sent := ""
	if vs := metadata.ValueFromIncomingContext(ctx, RequestIDHeader); len(vs) > 0 {
		sent = vs[0]
	}
	r = &request{id: requestID(sent)}
	return context.WithValue(ctx, requestKey{}, r), r, r.id == sent
}

// returnRequestID sends the call's id back in its header metadata. It costs
// about ten allocations on the two ends (BenchmarkGRPC), which is why the
// public hot-path methods (Validate, Check, health) return it only when the
// caller sent one or the call failed: a successful one is logged at debug
// level only, so there is nothing else to find by an id made up for it.
func returnRequestID(ctx context.Context, r *request) {
	_ = grpc.SetHeader(ctx, metadata.MD{RequestIDHeader: []string{r.id}})
}

// gatewayMetadata runs in the REST gateway once it has matched a route: it
// records the route for the HTTP metrics and log line, and passes the
// request id on to the gRPC call. (A client's own x-request-id header is
// not forwarded by the gateway; this value replaces any other.)
func gatewayMetadata(ctx context.Context, _ *http.Request) metadata.MD {
	r, ok := ctx.Value(requestKey{}).(*request)
	if !ok {
		return nil
	}
	if p, ok := runtime.HTTPPathPattern(ctx); ok {
		r.route = p
	}
	return metadata.Pairs(RequestIDHeader, r.id)
}

// gatewayOutgoingHeader is the gateway's default mapping of the gRPC
// response's header metadata to HTTP headers, except the request id, which
// the HTTP layer already returns as X-Request-Id.
func gatewayOutgoingHeader(key string) (string, bool) {
	if strings.EqualFold(key, RequestIDHeader) {
		return "", false
	}
	return runtime.MetadataHeaderPrefix + key, true
}

// quietRoutes are polled by probes, scrapers and proxies (forward-auth on
// every proxied request, Validate): their answers are logged at debug level,
// unless the server failed (5xx).
var quietRoutes = map[string]bool{
	"/healthz": true, "/readyz": true, "/metrics": true, "/v1/auth": true, "/v1/keys:validate": true,
}

// observeHTTP gives every HTTP request an id, and when it is answered
// records it (Observer), names its trace span after the route, and logs one
// line: method, route, status, duration and request id. Never the path, the
// query string (a search may be a pasted secret) or any header.
func (s *Server) observeHTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		given := ""
		if vs := r.Header[requestIDField]; len(vs) > 0 {
			given = vs[0]
		}
		req := &request{id: requestID(given)}
		w.Header()[requestIDField] = []string{req.id}
		r = r.WithContext(context.WithValue(r.Context(), requestKey{}, req))
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r) // the mux sets r.Pattern

		d := time.Since(start)
		route := req.route
		if route == "" {
			route = routeOf(r.Pattern)
		}
		status := sw.status
		if status == 0 {
			status = http.StatusOK
		}
		if s.o.Observer != nil {
			s.o.Observer.HTTP(route, r.Method, status, d)
		}
		if span := trace.SpanFromContext(r.Context()); span.IsRecording() {
			span.SetName(r.Method + " " + route)
			span.SetAttributes(attribute.String("http.route", route))
		}
		level := slog.LevelInfo
		if quietRoutes[route] && status < 500 {
			level = slog.LevelDebug
		}
		if s.log.Enabled(r.Context(), level) {
			s.log.LogAttrs(r.Context(), level, "http",
				slog.String("method", r.Method), slog.String("route", route),
				slog.Int("status", status), slog.Duration("duration", d))
		}
	})
}

// routeOf is a ServeMux pattern without its method and host:
// "GET /openapi.json" → "/openapi.json". No pattern matched: "unmatched".
func routeOf(pattern string) string {
	if _, p, ok := strings.Cut(pattern, " "); ok {
		pattern = p
	}
	if i := strings.IndexByte(pattern, '/'); i > 0 {
		pattern = pattern[i:]
	}
	if pattern == "" {
		return "unmatched"
	}
	return pattern
}

// statusWriter remembers the status written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush and Unwrap keep http.Flusher and http.ResponseController working.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// LogRequestIDs returns log, whose records made with a request's context
// (the …Context methods) carry its request_id. Wrapping twice is harmless.
func LogRequestIDs(log *slog.Logger) *slog.Logger {
	if _, ok := log.Handler().(requestIDHandler); ok {
		return log
	}
	return slog.New(requestIDHandler{log.Handler()})
}

type requestIDHandler struct{ slog.Handler }

func (h requestIDHandler) Handle(ctx context.Context, r slog.Record) error {
	if id := RequestID(ctx); id != "" {
		r.AddAttrs(slog.String("request_id", id))
	}
	return h.Handler.Handle(ctx, r)
}

func (h requestIDHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return requestIDHandler{h.Handler.WithAttrs(as)}
}

func (h requestIDHandler) WithGroup(name string) slog.Handler {
	return requestIDHandler{h.Handler.WithGroup(name)}
}

// httpHandler is the HTTP listener's handler: mux, observed, then wrapped
// by Options.WrapHTTP (tracing, outermost so its span covers everything).
func (s *Server) httpHandler(mux http.Handler) http.Handler {
	h := s.observeHTTP(mux)
	if s.o.WrapHTTP != nil {
		h = s.o.WrapHTTP(h)
	}
	return h
}
