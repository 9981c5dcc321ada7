// Package baseline is the yardstick kwbench measures Keyward against: a gRPC
// server registering keyward.v1.KeyService with only Validate implemented,
// on grpc.NewServer's defaults as Keyward's server uses them, in three
// variants:
//
//   - noop: answers ValidateResponse{Valid: true};
//   - redis-get: one go-redis GET of a fixed key, then answers;
//   - pgx-select: one pgx pool primary-key SELECT from a one-row table, then answers.
//
// The clients use their libraries' defaults, as Keyward's do (go-redis
// Options with only Addr; pgxpool.ParseConfig of the same DSN).
package baseline

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
)

// Variants lists the handlers in the order kwbench reports them.
var Variants = []string{"noop", "redis-get", "pgx-select"}

// payloadSize is the size of the value read by redis-get and pgx-select:
// about what a cached key entry weighs.
const payloadSize = 256

type service struct {
	keywardv1.UnimplementedKeyServiceServer
	validate func(ctx context.Context) error
}

var validResponse = func() *keywardv1.ValidateResponse { return &keywardv1.ValidateResponse{Valid: true} }

func (s *service) Validate(ctx context.Context, _ *keywardv1.ValidateRequest) (*keywardv1.ValidateResponse, error) {
	if s.validate != nil {
		if err := s.validate(ctx); err != nil {
			return nil, status.Error(codes.Unavailable, err.Error())
		}
	}
	return validResponse(), nil
}

// Main runs the hidden baseline mode until ctx ends. kwbench learns that it
// serves from the health service.
func Main(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("kwbench baseline", flag.ContinueOnError)
	variant := fs.String("variant", "noop", strings.Join(Variants, ", "))
	addr := fs.String("addr", "127.0.0.1:0", "gRPC listen address")
	redisAddr := fs.String("redis-addr", "127.0.0.1:6379", "Redis for redis-get")
	dsn := fs.String("postgres-dsn", "", "Postgres for pgx-select")
	if err := fs.Parse(args); err != nil {
		return err
	}
	svc := &service{}
	switch *variant {
	case "noop":
	case "redis-get":
		rdb := redis.NewClient(&redis.Options{Addr: *redisAddr})
		defer rdb.Close()
		key := "kwbench:baseline:" + randomHex(8)
		payload := randomHex(payloadSize / 2)
		if err := rdb.Set(ctx, key, payload, time.Hour).Err(); err != nil {
			return fmt.Errorf("redis-get: set %s: %w", key, err)
		}
		defer rdb.Del(context.Background(), key)
		svc.validate = func(ctx context.Context) error {
			b, err := rdb.Get(ctx, key).Bytes()
			if err == nil && len(b) != payloadSize {
				err = errors.New("redis-get: wrong payload")
			}
			return err
		}
	case "pgx-select":
		if *dsn == "" {
			return errors.New("pgx-select needs -postgres-dsn")
		}
		cfg, err := pgxpool.ParseConfig(*dsn)
		if err != nil {
			return err
		}
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			return err
		}
		defer pool.Close()
		if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS kwbench_baseline (
			id bigint PRIMARY KEY, payload bytea NOT NULL)`); err != nil {
			return fmt.Errorf("pgx-select: create table: %w", err)
		}
		if _, err := pool.Exec(ctx, `INSERT INTO kwbench_baseline (id, payload) VALUES (1, $1)
			ON CONFLICT (id) DO NOTHING`, []byte(randomHex(payloadSize/2))); err != nil {
			return fmt.Errorf("pgx-select: insert row: %w", err)
		}
		svc.validate = func(ctx context.Context) error {
			var payload []byte
			if err := pool.QueryRow(ctx, "SELECT payload FROM kwbench_baseline WHERE id = $1", int64(1)).Scan(&payload); err != nil {
				return err
			}
			if len(payload) != payloadSize {
				return errors.New("pgx-select: wrong payload")
			}
			return nil
		}
	default:
		return fmt.Errorf("unknown variant %q: want one of %s", *variant, strings.Join(Variants, ", "))
	}

	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	// Keyward's server: grpc.NewServer with no options besides its
	// interceptors, KeyService, health and reflection. The baseline keeps
	// the defaults and skips interceptors: they are Keyward's own cost.
	srv := grpc.NewServer()
	keywardv1.RegisterKeyServiceServer(srv, svc)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	select {
	case <-ctx.Done():
		srv.Stop()
		<-done
		return nil
	case err := <-done:
		return err
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
