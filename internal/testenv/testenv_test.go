package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// fakeTB records what Require asks of a test instead of ending one.
type fakeTB struct {
	testing.TB
	fatal, skipped bool
	msg            string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fatal, f.msg = true, fmt.Sprintf(format, args...)
}
func (f *fakeTB) Skipf(format string, args ...any) {
	f.skipped, f.msg = true, fmt.Sprintf(format, args...)
}

func TestRequire(t *testing.T) {
	down := errors.New("connection refused")
	for _, tc := range []struct {
		name        string
		ci          string
		err         error
		fatal, skip bool
	}{
		{"ok/reachable", "true", nil, false, false},
		{"ok/reachable-locally", "", nil, false, false},
		{"fail/unreachable-in-ci", "true", down, true, false},
		{"skip/unreachable-locally", "", down, false, true},
		{"skip/ci-not-exactly-true", "1", down, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("CI", tc.ci)
			f := &fakeTB{}
			Require(f, "Postgres", tc.err)
			if f.fatal != tc.fatal || f.skipped != tc.skip {
				t.Fatalf("fatal %v, skipped %v; want %v, %v", f.fatal, f.skipped, tc.fatal, tc.skip)
			}
			if tc.err != nil && (!strings.Contains(f.msg, "Postgres") || !strings.Contains(f.msg, down.Error())) {
				t.Errorf("message %q names neither the service nor the cause", f.msg)
			}
			if tc.skip && !strings.Contains(f.msg, "CI=true") {
				t.Errorf("skip message %q does not say how to make it fatal", f.msg)
			}
		})
	}
}

func TestWithDatabase(t *testing.T) {
	for _, tc := range []struct{ dsn, want string }{
		{"postgres://u:p@h:5432/postgres?sslmode=disable", "postgres://u:p@h:5432/kw?sslmode=disable"},
		{"postgresql://h/", "postgresql://h/kw"},
		{"host=h user=u dbname=postgres", "host=h user=u dbname=postgres dbname=kw"},
	} {
		got, err := withDatabase(tc.dsn, "kw")
		if err != nil || got != tc.want {
			t.Errorf("withDatabase(%q) = %q, %v; want %q", tc.dsn, got, err, tc.want)
		}
	}
	if _, err := withDatabase("postgres://u:secret@h:bad port/", "kw"); err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("bad URL: err = %v, want an error without the password", err)
	}
}

func TestPostgresGivesAFreshDatabaseAndDropsIt(t *testing.T) {
	var name string
	t.Run("use", func(t *testing.T) {
		dsn := Postgres(t)
		conn, err := pgx.Connect(t.Context(), dsn)
		if err != nil {
			t.Fatalf("connect to the test database: %v", err)
		}
		defer conn.Close(context.Background())
		if err := conn.QueryRow(t.Context(), "SELECT current_database()").Scan(&name); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(name, "keyward_test_") {
			t.Errorf("database %q is not a test database", name)
		}
		var tables int
		if err := conn.QueryRow(t.Context(),
			"SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").Scan(&tables); err != nil || tables != 0 {
			t.Errorf("fresh database has %d tables (err %v)", tables, err)
		}
	})
	if name == "" {
		return // skipped: no Postgres
	}
	conn, err := pgx.Connect(t.Context(), Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var exists bool
	if err := conn.QueryRow(t.Context(),
		"SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil || exists {
		t.Errorf("database %s still exists after its test (err %v)", name, err)
	}
}

func TestRedis(t *testing.T) {
	if addr := Redis(t); addr == "" {
		t.Error("empty address")
	}
}

func TestPingRedisRefusesWhatIsNotRedis(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\n"))
			c.Close()
		}
	}()
	if err := pingRedis(ln.Addr().String()); err == nil {
		t.Error("pingRedis accepted a server that is not Redis")
	}
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := closed.Addr().String()
	closed.Close()
	if err := pingRedis(addr); err == nil {
		t.Error("pingRedis accepted a closed port")
	}
}
