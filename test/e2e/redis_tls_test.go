package e2e

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testenv"
	"github.com/keyward/keyward/internal/testpki"
)

// TestRedisTLS runs keyward against a real redis-server that speaks only
// TLS and requires a password, given as a rediss:// URL with the test CA in
// --redis-tls-ca-file; and checks that without that CA the connection is
// refused (the certificate is verified) while Keyward keeps serving.
func TestRedisTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testpki.NewCA(t, "redis-ca")
	certFile, keyFile := ca.Server(t).WriteFiles(t, dir, "redis")
	caFile := filepath.Join(dir, "ca.pem")
	testpki.WriteFile(t, caFile, ca.PEM)
	const password = "redis-pw-s3cret"
	port := startRedisArgs(t, func(port int) []string {
		return []string{"--port", "0", "--tls-port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-ca-cert-file", caFile,
			"--tls-auth-clients", "no", "--requirepass", password, "--save", "", "--appendonly", "no"}
	})
	url := fmt.Sprintf("rediss://:%s@127.0.0.1:%d", password, port)

	s := startServerWith(t, serverOptions{DataDir: t.TempDir(), Args: []string{
		"--redis-addr", url, "--redis-tls-ca-file", caFile, "--redis-namespace", "tls" + randomName(t)}})
	if got := redisReadiness(t, s, "ok"); got["redis"] != "ok" {
		t.Fatalf("/readyz = %v, want redis ok over TLS", got)
	}
	exerciseRevocation(t, s)
	if strings.Contains(s.Log(), password) {
		t.Error("the Redis password is in keyward's log")
	}

	t.Run("fail/unknown-ca", func(t *testing.T) {
		s := startServerWith(t, serverOptions{DataDir: t.TempDir(), Args: []string{
			"--redis-addr", url, "--redis-namespace", "tls" + randomName(t)}})
		if got := redisReadiness(t, s, "unavailable"); got["redis"] != "unavailable" {
			t.Errorf("/readyz = %v, want redis unavailable: the test CA is not trusted", got)
		}
		if r := s.call(t, "GET", "/healthz", "", false); r.Status != http.StatusOK {
			t.Errorf("/healthz: %d, want 200: Keyward serves without Redis", r.Status)
		}
	})
}

// TestRedisSentinel runs keyward with --redis-sentinel-master against a real
// Sentinel watching a private redis-server.
func TestRedisSentinel(t *testing.T) {
	t.Parallel()
	master := startRedis(t)
	if master == nil {
		return
	}
	conf := filepath.Join(t.TempDir(), "sentinel.conf")
	sentinel := startRedisArgs(t, func(port int) []string {
		// Sentinel rewrites its config file, so it gets a fresh one each try.
		body := fmt.Sprintf("port %d\nbind 127.0.0.1\nsentinel monitor kwmaster 127.0.0.1 %d 1\n", port, master.port)
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return []string{conf, "--sentinel"}
	})
	s := startServerWith(t, serverOptions{DataDir: t.TempDir(), Args: []string{
		"--redis-addr", fmt.Sprintf("127.0.0.1:%d", sentinel), "--redis-sentinel-master", "kwmaster",
		"--redis-namespace", "sentinel" + randomName(t)}})
	if got := redisReadiness(t, s, "ok"); got["redis"] != "ok" {
		t.Fatalf("/readyz = %v, want redis ok through the Sentinel", got)
	}
	exerciseRevocation(t, s)
}

// exerciseRevocation creates, validates, disables and validates a key: with
// Redis configured, the disable must reach Redis to succeed at all.
func exerciseRevocation(t *testing.T, s *server) {
	t.Helper()
	key, secret := s.createKey(t, `{"displayName": "redis transport"}`)
	if m := s.validate(t, secret); m["valid"] != true {
		t.Fatalf("validate: %v", m)
	}
	s.call(t, "POST", "/v1/keys/"+keyID(key)+":disable", "", true).want(t, http.StatusOK)
	if m := s.validate(t, secret); m["valid"] == true {
		t.Fatalf("validate after disable: %v", m)
	}
}

// redisReadiness returns /readyz's report once it says want for Redis, or
// after 5 s (Redis is dialled lazily).
func redisReadiness(t *testing.T, s *server, want string) map[string]any {
	t.Helper()
	var m map[string]any
	for deadline := time.Now().Add(5 * time.Second); ; {
		r := s.call(t, "GET", "/readyz", "", false)
		m = r.want(t, r.Status)
		if m["redis"] == want || time.Now().After(deadline) {
			return m
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startRedisArgs runs redis-server with args(port) on a free loopback port
// until t ends, and returns the port once it accepts connections. A missing
// binary follows testenv.Require.
func startRedisArgs(t *testing.T, args func(port int) []string) int {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	testenv.Require(t, "redis-server", err)
	var lastErr error
	for range 5 { // another process may take the free port in between
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		argv := args(port)
		cmd := exec.Command(bin, argv...)
		log := &logBuffer{}
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		stop := func() { cmd.Process.Kill(); <-done }
		if lastErr = waitListening(net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), done); lastErr == nil {
			t.Cleanup(func() {
				stop()
				if t.Failed() {
					t.Logf("redis-server %v log:\n%s", argv, log.String())
				}
			})
			return port
		}
		stop()
		lastErr = fmt.Errorf("%w; log:\n%s", lastErr, log.String())
	}
	t.Fatal(lastErr)
	return 0
}

// waitListening waits up to 5 s for addr to accept TCP connections, or for
// exited to close.
func waitListening(addr string, exited <-chan struct{}) error {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case <-exited:
			return errors.New("redis-server exited")
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
	}
	return fmt.Errorf("redis-server on %s did not accept connections within 5s", addr)
}
