package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// proc is a child process kwbench started: a Keyward instance, a baseline
// server or a load generator. Every proc is registered in procs so that
// cleanup can stop whatever is still running, however kwbench exits.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string // stderr (and stdout unless captured) go here; "" = kwbench's stderr
	done    chan struct{}
	err     error // set when done is closed
}

var procs struct {
	sync.Mutex
	live map[*proc]bool
}

// startProc starts bin with args. If stdout is nil the child's stdout joins
// its log. The child gets its own process group, so a Ctrl-C in the
// terminal reaches only kwbench, which then stops its children in order;
// and it is killed by the kernel if kwbench dies without cleaning up.
func startProc(name, logPath string, stdout io.Writer, env []string, bin string, args ...string) (*proc, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var logFile *os.File
	if logPath != "" {
		f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, err
		}
		logFile = f
		cmd.Stderr = f
		cmd.Stdout = f
	} else {
		cmd.Stderr = os.Stderr
	}
	if stdout != nil {
		cmd.Stdout = stdout
	}
	if err := cmd.Start(); err != nil {
		if logFile != nil {
			logFile.Close()
		}
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	procs.Lock()
	if procs.live == nil {
		procs.live = map[*proc]bool{}
	}
	procs.live[p] = true
	procs.Unlock()
	go func() {
		p.err = cmd.Wait()
		if logFile != nil {
			logFile.Close()
		}
		procs.Lock()
		delete(procs.live, p)
		procs.Unlock()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits up to grace, then kills. It returns the tail of
// the log if the process wrote anything (warnings are worth seeing).
func (p *proc) stop(grace time.Duration) {
	if !p.exited() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
			p.cmd.Process.Kill()
			<-p.done
		}
	}
}

// logTail returns up to n last lines of the proc's log.
func (p *proc) logTail(n int) string {
	if p.logPath == "" {
		return ""
	}
	b, err := os.ReadFile(p.logPath)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d earlier lines in the log)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return "    " + strings.Join(lines, "\n    ")
}

// stopAndReport stops p and shows what it logged, if anything.
func (p *proc) stopAndReport() {
	p.stop(10 * time.Second)
	if tail := p.logTail(8); tail != "" {
		logf("  %s logged:\n%s", p.name, tail)
	}
}

// stopAll stops every child still running, concurrently.
func stopAll() {
	procs.Lock()
	var ps []*proc
	for p := range procs.live {
		ps = append(ps, p)
	}
	procs.Unlock()
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() { defer wg.Done(); p.stop(5 * time.Second) }()
	}
	wg.Wait()
}

// freeAddr returns a loopback address with a port nothing listens on now.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// waitReady waits until the gRPC health service answers SERVING and, if
// httpAddr is set, /readyz answers 200 — or p exits, or the timeout passes.
func waitReady(ctx context.Context, p *proc, grpcAddr, httpAddr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cc, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)
	httpc := &http.Client{Timeout: 2 * time.Second}
	var last error
	for {
		if p.exited() {
			return fmt.Errorf("%s exited during start-up (%v):\n%s", p.name, p.err, p.logTail(20))
		}
		last = func() error {
			cctx, ccancel := context.WithTimeout(ctx, time.Second)
			defer ccancel()
			resp, err := hc.Check(cctx, &healthpb.HealthCheckRequest{})
			if err != nil {
				return err
			}
			if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				return fmt.Errorf("health: %s", resp.GetStatus())
			}
			if httpAddr == "" {
				return nil
			}
			req, _ := http.NewRequestWithContext(cctx, http.MethodGet, "http://"+httpAddr+"/readyz", nil)
			r, err := httpc.Do(req)
			if err != nil {
				return err
			}
			body, _ := io.ReadAll(r.Body)
			r.Body.Close()
			if r.StatusCode != http.StatusOK {
				return fmt.Errorf("/readyz: %d %s", r.StatusCode, bytes.TrimSpace(body))
			}
			return nil
		}()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("%s not ready after %v: %v\n%s", p.name, timeout, last, p.logTail(20))
			}
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// lineWriter hands each complete line written to it to fn.
type lineWriter struct {
	mu  sync.Mutex
	buf []byte
	fn  func(string)
}

func (w *lineWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, b...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		line := string(w.buf[:i])
		w.buf = w.buf[i+1:]
		w.fn(line)
	}
}
