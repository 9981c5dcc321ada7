package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testenv"
)

// runKeyward runs the binary to completion (or until timeout) in a temp dir.
func runKeyward(t *testing.T, timeout time.Duration, args ...string) (stdout, stderr string, exitCode int, took time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, keywardBin, args...)
	cmd.Dir = t.TempDir()
	cmd.Env = serverEnv()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	start := time.Now()
	err := cmd.Run()
	took = time.Since(start)
	if ctx.Err() != nil {
		t.Fatalf("keyward %s did not exit within %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), timeout, &out, &errOut)
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		exitCode = exit.ExitCode()
	default:
		t.Fatalf("run keyward %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errOut.String(), exitCode, took
}

// TestServeFailsClearly: a server that cannot start says why and exits
// non-zero instead of hanging or serving half a service.
func TestServeFailsClearly(t *testing.T) {
	t.Parallel()
	t.Run("postgres unreachable", func(t *testing.T) {
		t.Parallel()
		// Nothing listens on port 1.
		stdout, stderr, code, took := runKeyward(t, 30*time.Second, "serve",
			"--postgres-dsn", "postgres://postgres@127.0.0.1:1/x?sslmode=disable",
			"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--data-dir", t.TempDir())
		if code == 0 {
			t.Errorf("exit code 0, want non-zero\nstdout: %s\nstderr: %s", stdout, stderr)
		}
		if took > 20*time.Second {
			t.Errorf("took %v to give up, want at most 20s", took)
		}
		// The startup log names the store too; the error itself must say it.
		if msg := errorLine(stderr); !strings.Contains(strings.ToLower(msg), "postgres") {
			t.Errorf("the error %q does not mention postgres; stderr:\n%s", msg, stderr)
		}
		if strings.Contains(stderr, "keyward is serving") {
			t.Errorf("claimed to be serving without a store:\n%s", stderr)
		}
	})
	t.Run("bad grpc address", func(t *testing.T) {
		t.Parallel()
		stdout, stderr, code, _ := runKeyward(t, 20*time.Second, "serve",
			"--grpc-addr", "nonsense", "--http-addr", "127.0.0.1:0", "--data-dir", t.TempDir())
		if code == 0 {
			t.Errorf("exit code 0, want non-zero\nstdout: %s\nstderr: %s", stdout, stderr)
		}
		if msg := errorLine(stderr); !strings.Contains(msg, "--grpc-addr") {
			t.Errorf("the error %q does not name --grpc-addr; stderr:\n%s", msg, stderr)
		}
	})
}

// errorLine returns the "keyward: …" line main prints for a failed command.
func errorLine(stderr string) string {
	for _, line := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(line, "keyward: ") {
			return line
		}
	}
	return ""
}

// TestMigrate: `keyward migrate` prepares a fresh Postgres database and is
// idempotent.
func TestMigrate(t *testing.T) {
	t.Parallel()
	dsn := testenv.Postgres(t)
	for i := 1; i <= 2; i++ {
		stdout, stderr, code, _ := runKeyward(t, 60*time.Second, "migrate", "--postgres-dsn", dsn, "--data-dir", t.TempDir())
		if code != 0 {
			t.Fatalf("run %d: keyward migrate exited %d\nstdout: %s\nstderr: %s", i, code, stdout, stderr)
		}
	}
	// The migrated database serves.
	srv := startServer(t, t.TempDir(), dsn)
	srv.createKey(t, `{"displayName": "after migrate"}`)
}

// TestMigrateSQLite: migrate without a DSN creates the embedded store.
func TestMigrateSQLite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for i := 1; i <= 2; i++ {
		stdout, stderr, code, _ := runKeyward(t, 60*time.Second, "migrate", "--data-dir", dir)
		if code != 0 {
			t.Fatalf("run %d: keyward migrate exited %d\nstdout: %s\nstderr: %s", i, code, stdout, stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "keyward.db")); err != nil {
		t.Errorf("no SQLite file after migrate: %v", err)
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	stdout, stderr, code, _ := runKeyward(t, 10*time.Second, "version")
	if code != 0 {
		t.Fatalf("keyward version exited %d: %s", code, stderr)
	}
	if strings.TrimSpace(stdout) == "" {
		t.Errorf("keyward version printed nothing on stdout (stderr: %q)", stderr)
	}
}

// TestKeysCLI drives `keyward keys …` (the contract's CLI client) against a
// real server: create with every documented flag, list, disable (flags after
// the key id), and a clear failure for an unknown id.
func TestKeysCLI(t *testing.T) {
	t.Parallel()
	srv := startServer(t, t.TempDir(), "")
	common := []string{"--server", srv.GRPCAddr, "--admin-key-file", filepath.Join(srv.DataDir, "admin.key")}
	keys := func(args ...string) (string, string, int) {
		stdout, stderr, code, _ := runKeyward(t, 30*time.Second, append([]string{"keys"}, args...)...)
		return stdout, stderr, code
	}
	out, errOut, code := keys(append([]string{"create", "--name", "cli key", "--description", "from the CLI",
		"--environment", "test", "--scopes", "orders:read,orders:write", "-o", "json"}, common...)...)
	if code != 0 {
		t.Fatalf("keys create exited %d: %s", code, errOut)
	}
	var created struct {
		Key struct {
			KeyID, DisplayName, Description, Environment string
			Scopes                                       []string
		}
		Secret string
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil {
		t.Fatalf("keys create -o json printed %q: %v", out, err)
	}
	k := created.Key
	if k.DisplayName != "cli key" || k.Description != "from the CLI" || k.Environment != "test" ||
		strings.Join(k.Scopes, ",") != "orders:read,orders:write" || !strings.HasPrefix(created.Secret, "kw_test_") {
		t.Fatalf("created %+v", created)
	}
	if got := srv.validate(t, created.Secret); got["valid"] != true {
		t.Fatalf("the CLI's key does not validate: %v", got)
	}

	out, errOut, code = keys(append([]string{"list", "--query", "cli"}, common...)...)
	if code != 0 || !strings.Contains(out, k.KeyID) || !strings.Contains(out, "ACTIVE") || strings.Contains(out, created.Secret) {
		t.Fatalf("keys list (exit %d): %q %s", code, out, errOut)
	}
	out, errOut, code = keys(append([]string{"disable", k.KeyID}, common...)...)
	if code != 0 || !strings.Contains(out, "DISABLED") {
		t.Fatalf("keys disable (exit %d): %q %s", code, out, errOut)
	}
	if got := srv.validate(t, created.Secret); got["reason"] != "REASON_DISABLED" {
		t.Fatalf("after keys disable: %v", got)
	}
	_, errOut, code = keys(append([]string{"get", "key_unknown"}, common...)...)
	if code == 0 || !strings.Contains(errOut, "NotFound") {
		t.Fatalf("keys get of an unknown id: exit %d, %q", code, errOut)
	}
}
