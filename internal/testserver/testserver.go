// Package testserver starts a real, in-process Keyward from the production
// wiring (internal/app) on loopback ports, for tests that drive it through
// real gRPC and HTTP clients.
package testserver

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/app"
	"github.com/keyward/keyward/internal/config"
	"github.com/keyward/keyward/internal/keymat"
)

// Options selects the store; the zero value is embedded SQLite in a temp dir.
type Options struct {
	PostgresDSN string
	DataDir     string
	// RedisAddr adds the Redis tier and cross-instance invalidation;
	// instances of one test share RedisNamespace.
	RedisAddr      string
	RedisNamespace string
	// AdminKey lets several instances share one admin credential.
	AdminKey string
	// NoLocalCache turns the in-process tier off.
	NoLocalCache bool
	// MasterKey (KEYWARD_MASTER_KEY) allows recoverable keys.
	MasterKey string
	// Log, if set, receives every log line, at debug level.
	Log io.Writer
	// UsageFlushInterval is --usage-flush-interval (0: its default).
	UsageFlushInterval time.Duration
	// Args are further flags, e.g. --abuse-burst=5.
	Args []string
}

// Server is a running instance and clients for it.
type Server struct {
	Client   keywardv1.KeyServiceClient
	Conn     *grpc.ClientConn
	BaseURL  string // http://host:port
	GRPCAddr string
	AdminKey string
	DataDir  string
}

// Start runs a server until the test ends.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	if o.DataDir == "" {
		o.DataDir = t.TempDir()
	}
	if o.AdminKey == "" {
		admin, err := keymat.Generate("live")
		if err != nil {
			t.Fatal(err)
		}
		o.AdminKey = admin.String()
	}
	args := append([]string{"--grpc-addr=127.0.0.1:0", "--http-addr=127.0.0.1:0", "--data-dir=" + o.DataDir}, o.Args...)
	cfg, err := config.Parse("test", args,
		func(k string) string {
			switch k {
			case "KEYWARD_ADMIN_KEY":
				return o.AdminKey
			case "KEYWARD_POSTGRES_DSN":
				return o.PostgresDSN
			case "KEYWARD_REDIS_ADDR":
				return o.RedisAddr
			case "KEYWARD_REDIS_NAMESPACE":
				return o.RedisNamespace
			case "KEYWARD_MASTER_KEY":
				return o.MasterKey
			case "KEYWARD_LOCAL_CACHE":
				if o.NoLocalCache {
					return "false"
				}
			case "KEYWARD_USAGE_FLUSH_INTERVAL":
				if o.UsageFlushInterval > 0 {
					return o.UsageFlushInterval.String()
				}
			}
			return ""
		})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if o.Log != nil {
		log = slog.New(slog.NewTextHandler(o.Log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, cancel := context.WithCancel(context.Background())
	a, err := app.New(ctx, cfg, log)
	if err != nil {
		cancel()
		t.Fatalf("start keyward: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	conn, err := grpc.NewClient(a.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("keyward stopped with: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("keyward did not stop within 15s")
		}
	})
	return &Server{
		Client: keywardv1.NewKeyServiceClient(conn), Conn: conn,
		BaseURL: "http://" + a.HTTPAddr(), GRPCAddr: a.GRPCAddr(),
		AdminKey: o.AdminKey, DataDir: o.DataDir,
	}
}

// Admin returns ctx carrying the admin credential.
func (s *Server) Admin(ctx context.Context) context.Context {
	return WithBearer(ctx, s.AdminKey)
}

// WithBearer returns ctx carrying token as the bearer credential.
func WithBearer(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }
