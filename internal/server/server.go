package server

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protojson"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/abuse"
)

//go:embed openapi.json
var openapi []byte

// Checker reports whether one dependency is usable, for /readyz.
type Checker interface {
	Ping(ctx context.Context) error
}

// Options configures a Server.
type Options struct {
	GRPCAddr string
	HTTPAddr string
	Service  keywardv1.KeyServiceServer
	Auth     Authenticator
	// Ready names the dependencies /readyz checks.
	Ready  map[string]Checker
	Logger *slog.Logger
	// Register adds further gRPC services (e.g. Envoy's Authorization).
	Register func(*grpc.Server)
	// Routes adds further HTTP handlers (e.g. the console, forward-auth).
	Routes func(*http.ServeMux)
	// Observer is told of every finished gRPC call and HTTP request, for
	// metrics; nil for none (observe.go).
	Observer Observer
	// GRPCOptions, DialOptions and WrapHTTP instrument the server (tracing):
	// options of the gRPC server and of the REST gateway's connection to
	// it, and a wrapper of the whole HTTP handler.
	GRPCOptions []grpc.ServerOption
	DialOptions []grpc.DialOption
	WrapHTTP    func(http.Handler) http.Handler
	// TLS, if set, serves both listeners over TLS (tls.go).
	TLS TLS
	// ClientCerts demands verified client certificates for Validate and
	// Check on the gRPC listener (needs TLS with client CAs); ClientSubjects,
	// if any, are the allowed subjects (mtls.go).
	ClientCerts    bool
	ClientSubjects []string
	// AuditLog records failed admin sign-ins; nil: they are only counted.
	AuditLog AuditLog
	// Abuse throttles failed Validate calls per client address; nil: off.
	// TrustedProxyHops is how many proxies in front of the HTTP listener
	// append to X-Forwarded-For, for the REST client's address (abuse.go).
	Abuse            *abuse.Throttle
	TrustedProxyHops int
}

// Server owns both listeners.
type Server struct {
	o       Options
	log     *slog.Logger
	grpcLis net.Listener
	httpLis net.Listener
	grpc    *grpc.Server
	health  *health.Server
	gwConn  *grpc.ClientConn
	gwLis   gatewayListener // in-memory listener of the REST gateway (tls.go)
	http    *http.Server
}

// New binds both listeners, so the caller learns of a taken port at once and
// tests can pass ":0" and read the bound addresses.
func New(o Options) (*Server, error) {
	s := &Server{o: o, log: o.Logger}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = LogRequestIDs(s.log)
	var err error
	if s.grpcLis, err = net.Listen("tcp", o.GRPCAddr); err != nil {
		return nil, fmt.Errorf("listen gRPC on %s: %w", o.GRPCAddr, err)
	}
	if s.httpLis, err = net.Listen("tcp", o.HTTPAddr); err != nil {
		s.grpcLis.Close()
		return nil, fmt.Errorf("listen HTTP on %s: %w", o.HTTPAddr, err)
	}
	ic := interceptors{auth: o.Auth, log: s.log, obs: o.Observer, certs: newClientCerts(o.ClientCerts, o.ClientSubjects),
		fails: &signInFailures{log: o.AuditLog, logger: s.log, perSecond: 10}, abuse: o.Abuse, hops: o.TrustedProxyHops}
	s.grpc = grpc.NewServer(append(append(append(s.grpcServerOptions(), grpcLimits()...), o.GRPCOptions...), grpc.ChainUnaryInterceptor(ic.unary), grpc.ChainStreamInterceptor(ic.stream))...)
	keywardv1.RegisterKeyServiceServer(s.grpc, o.Service)
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	if o.Register != nil {
		o.Register(s.grpc)
	}

	s.gwLis = gatewayListener{bufconn.Listen(gatewayBuffer)}
	s.gwConn, err = s.dialGateway()
	if err != nil {
		s.grpcLis.Close()
		s.httpLis.Close()
		return nil, fmt.Errorf("dial own gRPC listener: %w", err)
	}
	gw := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, gatewayMarshaler()),
		runtime.WithErrorHandler(errorHandler),
		runtime.WithMetadata(gatewayMetadata),                    // route and request id (observe.go)
		runtime.WithOutgoingHeaderMatcher(gatewayOutgoingHeader), // X-Request-Id is set once, by observeHTTP
	)
	if err := keywardv1.RegisterKeyServiceHandler(context.Background(), gw, s.gwConn); err != nil {
		return nil, fmt.Errorf("register gateway: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", s.throttledREST(gw, limitBody(gw))) // abuse.go, limits.go
	mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(openapi)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	if o.Routes != nil {
		o.Routes(mux)
	}
	s.http = &http.Server{
		Handler:           s.httpHandler(mux),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    maxHeaderBytes,
		TLSConfig:         s.httpTLSConfig(),
		// net/http's own complaints (TLS handshake errors, mostly) as log
		// records like the others, not bare lines on stderr.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// GRPCAddr and HTTPAddr are the bound addresses.
func (s *Server) GRPCAddr() string { return s.grpcLis.Addr().String() }
func (s *Server) HTTPAddr() string { return s.httpLis.Addr().String() }

// Run serves until ctx ends, then shuts down gracefully: in-flight calls finish
// (up to a deadline), new ones are refused.
func (s *Server) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := s.grpc.Serve(s.grpcLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("serve gRPC: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := s.grpc.Serve(s.gwLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("serve the REST gateway's gRPC: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		serve := s.http.Serve
		if s.http.TLSConfig != nil {
			serve = func(l net.Listener) error { return s.http.ServeTLS(l, "", "") }
		}
		if err := serve(s.httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve HTTP: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		s.health.Shutdown() // probes see NOT_SERVING while we drain
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := s.http.Shutdown(sctx)
		stopped := make(chan struct{})
		go func() { s.grpc.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-sctx.Done():
			s.grpc.Stop()
		}
		s.gwConn.Close()
		return err
	})
	return g.Wait()
}

// readyz reports every dependency, checked concurrently so a hung one does
// not make the others look down. Only the store decides the status code:
// without Redis, Keyward still validates (from the store), so taking the
// instance out of a load balancer would turn a cache outage into an outage.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	var mu sync.Mutex
	out, code := map[string]string{}, http.StatusOK
	var wg sync.WaitGroup
	for name, c := range s.o.Ready {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
			defer cancel()
			state := "ok"
			if err := c.Ping(ctx); err != nil {
				state = "unavailable"
			}
			mu.Lock()
			defer mu.Unlock()
			out[name] = state
			if state != "ok" && name == "store" {
				code = http.StatusServiceUnavailable
			}
		}()
	}
	wg.Wait()
	writeJSON(w, code, out)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// gatewayMarshaler reads and writes the REST gateway's JSON bodies.
func gatewayMarshaler() runtime.Marshaler {
	return &runtime.HTTPBodyMarshaler{Marshaler: &runtime.JSONPb{
		MarshalOptions: protojson.MarshalOptions{EmitUnpopulated: true},
		// A misspelt field is an error, not silently ignored.
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
	}}
}

// errorHandler is grpc-gateway's default, with an RFC 6750 challenge on 401:
// the default handler puts the status message into WWW-Authenticate, which
// is not a valid challenge, so the header is replaced as the status is written.
// The gateway's own errors are redacted as toStatus redacts the service's:
// the JSON decoder quotes the token it did not expect, which may be a secret
// sent in the wrong field.
func errorHandler(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	if status.Code(err) == codes.Unauthenticated {
		w = challengeWriter{w}
	}
	setRetryAfter(w, err) // abuse.go
	var hs *runtime.HTTPStatusError
	if errors.As(err, &hs) {
		err = &runtime.HTTPStatusError{HTTPStatus: hs.HTTPStatus, Err: redactStatus(hs.Err)}
	} else {
		err = redactStatus(err)
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
}

type challengeWriter struct{ http.ResponseWriter }

func (c challengeWriter) WriteHeader(code int) {
	if code == http.StatusUnauthorized {
		c.Header().Set("WWW-Authenticate", `Bearer realm="keyward"`)
	}
	c.ResponseWriter.WriteHeader(code)
}
