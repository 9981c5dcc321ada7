package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	startTimeout = 30 * time.Second
	stopTimeout  = 15 * time.Second
)

// server is a running `keyward serve` process.
type server struct {
	DataDir  string
	DSN      string
	GRPCAddr string // host:port
	HTTPAddr string // host:port
	BaseURL  string // http://host:port
	AdminKey string

	cmd     *exec.Cmd
	log     *logBuffer
	done    chan struct{} // closed when the process has exited
	waitErr error
	stopped bool

	msgMu sync.Mutex
	msgs  map[string]int // how often each JSON log message was written
}

func (s *server) countMsg(msg string) {
	s.msgMu.Lock()
	s.msgs[msg]++
	s.msgMu.Unlock()
}

// MsgCount is how often the server has logged msg (the JSON "msg" field) so far.
func (s *server) MsgCount(msg string) int {
	s.msgMu.Lock()
	defer s.msgMu.Unlock()
	return s.msgs[msg]
}

// WaitMsg waits until the server has logged msg at least n times, and
// reports whether it did within timeout.
func (s *server) WaitMsg(msg string, n int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for s.MsgCount(msg) < n {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// Signal sends sig to the process (SIGSTOP and SIGCONT to pause it).
func (s *server) Signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to keyward: %v", sig, err)
	}
}

// startServer runs `keyward serve` on loopback ports with a JSON log, the
// store chosen by dsn ("" for SQLite in dataDir) and no KEYWARD_ADMIN_KEY, so
// the admin key is generated into dataDir/admin.key. It returns once the
// server logged "keyward is serving", and stops it (asserting a clean exit)
// when t ends.
func startServer(t *testing.T, dataDir, dsn string) *server {
	t.Helper()
	return startServerWith(t, serverOptions{DataDir: dataDir, DSN: dsn})
}

// serverOptions says how to run one `keyward serve`.
type serverOptions struct {
	DataDir string
	DSN     string // --postgres-dsn; "" for SQLite in DataDir
	// AdminKey is passed as KEYWARD_ADMIN_KEY; "" lets the server generate
	// one into DataDir/admin.key.
	AdminKey string
	// Args are further flags, e.g. --redis-addr.
	Args []string
	// Env are further KEYWARD_* variables, e.g. KEYWARD_MASTER_KEY=….
	Env []string
}

// startServerWith is startServer with the options above.
func startServerWith(t *testing.T, o serverOptions) *server {
	t.Helper()
	dataDir, dsn := o.DataDir, o.DSN
	args := []string{"serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--data-dir", dataDir, "--log-format", "json"}
	if dsn != "" {
		args = append(args, "--postgres-dsn", dsn)
	}
	args = append(args, o.Args...)
	s := &server{DataDir: dataDir, DSN: dsn, done: make(chan struct{}), msgs: map[string]int{}}
	ready := make(chan map[string]any, 1)
	s.log = &logBuffer{onLine: func(line []byte) {
		var rec map[string]any
		if json.Unmarshal(line, &rec) != nil {
			return
		}
		msg, _ := rec["msg"].(string)
		s.countMsg(msg)
		if msg == "keyward is serving" {
			select {
			case ready <- rec:
			default:
			}
		}
	}}
	s.cmd = exec.Command(keywardBin, args...)
	s.cmd.Dir = t.TempDir() // a stray ./keyward-data would land here, not in the repo
	s.cmd.Env = serverEnv()
	if o.AdminKey != "" {
		s.cmd.Env = append(s.cmd.Env, "KEYWARD_ADMIN_KEY="+o.AdminKey)
	}
	s.cmd.Env = append(s.cmd.Env, o.Env...)
	s.cmd.Stdout = s.log
	s.cmd.Stderr = s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start keyward: %v", err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		s.Stop(t)
		if t.Failed() {
			t.Logf("keyward log (%s):\n%s", s.describe(), s.Log())
		}
	})

	var rec map[string]any
	select {
	case rec = <-ready:
	case <-s.done:
		t.Fatalf("keyward serve exited before serving (%v); log:\n%s", s.waitErr, s.Log())
	case <-time.After(startTimeout):
		t.Fatalf("keyward serve did not log \"keyward is serving\" within %v", startTimeout)
	}

	grpcAddr, _ := rec["grpc"].(string)
	rest, _ := rec["rest"].(string)
	if _, _, err := net.SplitHostPort(grpcAddr); err != nil {
		t.Fatalf("\"keyward is serving\": grpc = %q, want host:port (%v)", grpcAddr, err)
	}
	scheme, hostPath, _ := strings.Cut(rest, "://") // https with --tls-cert-file
	if (scheme != "http" && scheme != "https") || !strings.HasSuffix(rest, "/v1/keys") {
		t.Fatalf("\"keyward is serving\": rest = %q, want http(s)://host:port/v1/keys", rest)
	}
	s.GRPCAddr = grpcAddr
	s.HTTPAddr = strings.TrimSuffix(hostPath, "/v1/keys")
	s.BaseURL = scheme + "://" + s.HTTPAddr
	if _, _, err := net.SplitHostPort(s.HTTPAddr); err != nil {
		t.Fatalf("\"keyward is serving\": rest = %q, want http://host:port/v1/keys (%v)", rest, err)
	}

	if o.AdminKey != "" {
		if got, _ := rec["admin_key"].(string); got != "(from KEYWARD_ADMIN_KEY)" {
			t.Errorf("\"keyward is serving\": admin_key = %q, want \"(from KEYWARD_ADMIN_KEY)\"", got)
		}
		s.AdminKey = o.AdminKey
		return s
	}
	keyFile := filepath.Join(dataDir, "admin.key")
	if got, _ := rec["admin_key"].(string); got != keyFile {
		t.Errorf("\"keyward is serving\": admin_key = %q, want %q", got, keyFile)
	}
	fi, err := os.Stat(keyFile)
	if err != nil {
		t.Fatalf("admin key file: %v", err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("%s has mode %v, want 0600", keyFile, perm)
	}
	raw, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	s.AdminKey = strings.TrimSpace(string(raw))
	if s.AdminKey == "" {
		t.Fatalf("%s is empty", keyFile)
	}
	return s
}

func (s *server) describe() string {
	if s.DSN != "" {
		return "postgres"
	}
	return "sqlite in " + s.DataDir
}

// serverEnv is the test's environment without KEYWARD_* variables, so
// neither KEYWARD_ADMIN_KEY nor any other setting leaks into the server.
func serverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KEYWARD_") {
			env = append(env, kv)
		}
	}
	return env
}

// Stop sends SIGTERM and asserts a graceful exit: status 0 within 15 s.
// Stopping twice is a no-op.
func (s *server) Stop(t *testing.T) {
	t.Helper()
	if s.stopped {
		return
	}
	s.stopped = true
	select {
	case <-s.done:
		t.Errorf("keyward exited before it was stopped: %v", s.waitErr)
		return
	default:
	}
	// A test may have paused it (SIGSTOP); a stopped process would not act on SIGTERM.
	_ = s.cmd.Process.Signal(syscall.SIGCONT)
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Errorf("SIGTERM keyward: %v", err)
	}
	select {
	case <-s.done:
		if s.waitErr != nil {
			t.Errorf("keyward did not exit cleanly after SIGTERM: %v", s.waitErr)
		}
	case <-time.After(stopTimeout):
		// SIGQUIT makes the Go runtime print every goroutine's stack into
		// the log, which shows what the shutdown waits for.
		s.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-s.done:
		case <-time.After(2 * time.Second):
			s.cmd.Process.Kill()
			<-s.done
		}
		t.Errorf("keyward did not exit within %v of SIGTERM (killed; goroutine dump in its log)", stopTimeout)
	}
}

// Log is everything the process wrote so far.
func (s *server) Log() string { return s.log.String() }

// logBuffer collects a process's output and calls onLine for each line.
type logBuffer struct {
	mu      sync.Mutex
	all     bytes.Buffer
	partial []byte
	onLine  func([]byte)
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.all.Write(p)
	b.partial = append(b.partial, p...)
	for {
		i := bytes.IndexByte(b.partial, '\n')
		if i < 0 {
			break
		}
		if b.onLine != nil {
			b.onLine(b.partial[:i])
		}
		b.partial = b.partial[i+1:]
	}
	return len(p), nil
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.all.String()
}

// --- HTTP ---

var httpClient = &http.Client{
	Timeout:   10 * time.Second,
	Transport: &http.Transport{Proxy: nil},
}

type response struct {
	Status int
	Header http.Header
	Body   []byte
	desc   string // "METHOD path" for messages
}

// call sends an HTTP request to the server; withAuth adds the admin key.
func (s *server) call(t *testing.T, method, path, body string, withAuth bool) response {
	t.Helper()
	token := ""
	if withAuth {
		token = s.AdminKey
	}
	return s.callAs(t, token, method, path, body)
}

// callAs sends an HTTP request with "authorization: Bearer token" (none if token is "").
func (s *server) callAs(t *testing.T, token, method, path, body string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.BaseURL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b, desc: method + " " + path}
}

// want asserts the status and returns the body decoded as a JSON object.
func (r response) want(t *testing.T, status int) map[string]any {
	t.Helper()
	if r.Status != status {
		t.Fatalf("%s: status %d, want %d; body: %s", r.desc, r.Status, status, r.Body)
	}
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("%s: body is not a JSON object (%v): %s", r.desc, err, r.Body)
	}
	return m
}

// createKey creates a key over REST and returns the key and its secret.
func (s *server) createKey(t *testing.T, body string) (key map[string]any, secret string) {
	t.Helper()
	m := s.call(t, "POST", "/v1/keys", body, true).want(t, http.StatusOK)
	key, ok := m["key"].(map[string]any)
	if !ok {
		t.Fatalf("POST /v1/keys: no \"key\" object in %v", m)
	}
	secret, _ = m["secret"].(string)
	if secret == "" {
		t.Fatalf("POST /v1/keys: no \"secret\" in %v", m)
	}
	if id, _ := key["keyId"].(string); !strings.HasPrefix(id, "key_") {
		t.Fatalf("POST /v1/keys: keyId = %v, want key_…", key["keyId"])
	}
	return key, secret
}

// validate calls POST /v1/keys:validate without credentials.
func (s *server) validate(t *testing.T, secret string) map[string]any {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"key": secret})
	return s.call(t, "POST", "/v1/keys:validate", string(body), false).want(t, http.StatusOK)
}

// keyID returns key["keyId"].
func keyID(key map[string]any) string {
	id, _ := key["keyId"].(string)
	return id
}

// containsAny reports whether s contains any of the non-empty subs.
func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if sub != "" && strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// randomName returns a short random string for names that must not collide.
func randomName(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
