package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testenv"
)

// redisProc is a private redis-server process (no persistence) that a test
// may kill, pause and restart on the same port, without disturbing any
// shared Redis.
type redisProc struct {
	Addr string
	port int
	bin  string
	cmd  *exec.Cmd
	done chan struct{}
	log  *logBuffer
}

// startRedis runs redis-server on a free loopback port until t ends. A
// missing redis-server binary follows testenv.Require: fatal when CI=true,
// a loud skip otherwise.
func startRedis(t *testing.T) *redisProc {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		testenv.Require(t, "redis-server", err)
		return nil
	}
	r := &redisProc{bin: bin}
	// The free port is found by binding :0 and letting go; another process
	// could take it in between, so try a few.
	var lastErr error
	for range 5 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		r.port = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		r.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port))
		if lastErr = r.start(); lastErr == nil {
			t.Cleanup(func() {
				r.kill()
				if t.Failed() {
					t.Logf("redis-server log (%s):\n%s", r.Addr, r.log.String())
				}
			})
			return r
		}
	}
	t.Fatalf("start redis-server: %v", lastErr)
	return nil
}

func (r *redisProc) start() error {
	r.cmd = exec.Command(r.bin, "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "")
	r.log = &logBuffer{}
	r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
	if err := r.cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	r.done = done
	cmd := r.cmd
	go func() { cmd.Wait(); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		reply, err := r.do("PING")
		if err == nil && reply == "PONG" {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("redis-server on %s exited: %s", r.Addr, r.log.String())
		default:
		}
		if time.Now().After(deadline) {
			r.kill()
			return fmt.Errorf("redis-server on %s did not answer PING within 10s (%v)", r.Addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Restart starts an empty redis-server on the same port after Kill.
func (r *redisProc) Restart(t *testing.T) {
	t.Helper()
	if err := r.start(); err != nil {
		t.Fatalf("restart redis-server: %v", err)
	}
}

// Kill ends the server with SIGKILL: no goodbye to its clients, nothing kept.
func (r *redisProc) Kill(t *testing.T) {
	t.Helper()
	if !r.kill() {
		t.Fatal("redis-server was not running")
	}
}

func (r *redisProc) kill() bool {
	if r.cmd == nil {
		return false
	}
	r.cmd.Process.Signal(syscall.SIGCONT)
	r.cmd.Process.Kill()
	<-r.done
	r.cmd = nil
	return true
}

// Pause freezes the server (SIGSTOP): its connections stay open, nothing answers.
func (r *redisProc) Pause(t *testing.T) { r.signal(t, syscall.SIGSTOP) }

// Resume undoes Pause.
func (r *redisProc) Resume(t *testing.T) { r.signal(t, syscall.SIGCONT) }

func (r *redisProc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if r.cmd == nil {
		t.Fatal("redis-server is not running")
	}
	if err := r.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to redis-server: %v", sig, err)
	}
}

// do sends one command and returns the reply, flattened to a string (an
// array's elements joined by newlines; nil as "(nil)").
func (r *redisProc) do(args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", r.Addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	return readRESP(bufio.NewReader(c))
}

// Do is do, failing t on an error.
func (r *redisProc) Do(t *testing.T, args ...string) string {
	t.Helper()
	reply, err := r.do(args...)
	if err != nil {
		t.Fatalf("redis %v: %v", args[0], err)
	}
	return reply
}

func readRESP(rd *bufio.Reader) (string, error) {
	line, err := rd.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", errors.New("empty RESP line")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", errors.New(line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", err
		}
		if n < 0 {
			return "(nil)", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(rd, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", err
		}
		parts := make([]string, 0, max(n, 0))
		for range n {
			p, err := readRESP(rd)
			if err != nil {
				return "", err
			}
			parts = append(parts, p)
		}
		return strings.Join(parts, "\n"), nil
	}
	return "", fmt.Errorf("unexpected RESP reply %q", line)
}
