// Package testenv gives tests the real services they need (PostgreSQL,
// Redis) and one rule for when a service is missing: in CI (CI=true) the test
// fails, because a suite that silently skips proves nothing; on a laptop it
// is skipped, loudly, so `go test ./...` works without setting anything up.
package testenv

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	// PostgresEnv names the variable holding the DSN of a server on which
	// tests may create and drop databases.
	PostgresEnv     = "KEYWARD_TEST_POSTGRES_DSN"
	defaultPostgres = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	// RedisEnv names the variable holding a Redis address (host:port).
	RedisEnv     = "KEYWARD_TEST_REDIS_ADDR"
	defaultRedis = "127.0.0.1:6379"

	dialTimeout = 5 * time.Second
)

// Require applies the missing-service rule: if err is not nil, service is
// unreachable, which fails t when the environment variable CI is "true" and
// skips it otherwise.
func Require(t testing.TB, service string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is unreachable and CI=true: %v", service, err)
		return
	}
	t.Skipf("!!! SKIPPING %s tests: %s is unreachable (%v). Start it, or set CI=true to make this fatal.",
		service, service, err)
}

// Postgres creates an empty database for t, dropped when t ends, on the
// server named by KEYWARD_TEST_POSTGRES_DSN (default: postgres@127.0.0.1:5432
// without TLS), and returns a DSN for it. See Require for an unreachable server.
func Postgres(t testing.TB) (dsn string) {
	t.Helper()
	admin := os.Getenv(PostgresEnv)
	if admin == "" {
		admin = defaultPostgres
	}
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		Require(t, "Postgres", err)
		return ""
	}
	defer conn.Close(context.Background())

	name := "keyward_test_" + randomHex(t, 8)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		// A fresh connection: the one above is long closed, and the test's
		// context is already cancelled when cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("drop test database %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		// FORCE ends sessions the test leaked rather than failing on them.
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop test database %s: %v", name, err)
		}
	})
	dsn, err = withDatabase(admin, name)
	if err != nil {
		t.Fatalf("test database DSN: %v", err)
	}
	return dsn
}

// withDatabase returns dsn naming database name instead, for both DSN forms
// libpq accepts: a URL, or key=value pairs (where a later key wins).
func withDatabase(dsn, name string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			// Not err itself: it quotes the DSN, password included.
			return "", fmt.Errorf("%s is not a valid URL", PostgresEnv)
		}
		u.Path = "/" + name
		return u.String(), nil
	}
	return dsn + " dbname=" + name, nil
}

// Redis returns the address of a Redis server that answered PING, from
// KEYWARD_TEST_REDIS_ADDR (default 127.0.0.1:6379). Tests sharing it must
// use their own key prefixes. See Require for an unreachable server.
func Redis(t testing.TB) (addr string) {
	t.Helper()
	addr = os.Getenv(RedisEnv)
	if addr == "" {
		addr = defaultRedis
	}
	Require(t, "Redis", pingRedis(addr))
	return addr
}

// pingRedis speaks just enough RESP to know a Redis is there: an inline
// PING answered by +PONG.
func pingRedis(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, dialTimeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(dialTimeout)); err != nil {
		return err
	}
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return fmt.Errorf("send PING to %s: %w", addr, err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read PING reply from %s: %w", addr, err)
	}
	if reply := strings.TrimSpace(line); reply != "+PONG" {
		return fmt.Errorf("%s answered PING with %q", addr, reply)
	}
	return nil
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
