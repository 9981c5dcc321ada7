package testenv

import (
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// RedisServer is a private redis-server process a test can stop, pause and
// restart, for fault tests that must not disturb the shared Redis.
type RedisServer struct {
	t    testing.TB
	Addr string
	port int
	cmd  *exec.Cmd
}

// StartRedis starts redis-server on a free loopback port (no persistence).
// Without the binary it fails in CI and skips loudly elsewhere.
func StartRedis(t testing.TB) *RedisServer {
	t.Helper()
	_, err := exec.LookPath("redis-server")
	Require(t, "redis-server binary", err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	r := &RedisServer{t: t, Addr: "127.0.0.1:" + strconv.Itoa(port), port: port}
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

// Start (re)starts the server, empty, on the same port.
func (r *RedisServer) Start() {
	r.t.Helper()
	r.cmd = exec.Command("redis-server", "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "")
	if err := r.cmd.Start(); err != nil {
		r.t.Fatalf("start redis-server: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for pingRedis(r.Addr) != nil {
		if time.Now().After(deadline) {
			r.t.Fatalf("redis-server on %s did not answer within 5s", r.Addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop kills the server (SIGKILL: no goodbye to clients).
func (r *RedisServer) Stop() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	r.cmd.Process.Signal(syscall.SIGCONT)
	r.cmd.Process.Kill()
	r.cmd.Wait()
	r.cmd = nil
}

// Pause freezes the server (SIGSTOP): connections stay open, nothing answers.
func (r *RedisServer) Pause() { r.signal(syscall.SIGSTOP) }

// Resume undoes Pause.
func (r *RedisServer) Resume() { r.signal(syscall.SIGCONT) }

func (r *RedisServer) signal(s syscall.Signal) {
	if r.cmd == nil {
		r.t.Fatal("redis-server is not running")
	}
	if err := r.cmd.Process.Signal(s); err != nil {
		r.t.Fatal(fmt.Errorf("signal redis-server: %w", err))
	}
}
