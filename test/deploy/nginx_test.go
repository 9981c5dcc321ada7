package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/testenv"
	"github.com/keyward/keyward/internal/testserver"
)

// TestComposeNginx runs deploy/compose/nginx.conf in Debian's nginx, with
// the compose service names replaced by a real Keyward and a stand-in API,
// and sends REST, gRPC and forward-auth requests through it.
func TestComposeNginx(t *testing.T) {
	bin := nginxBinary(t)
	kw := testserver.Start(t, testserver.Options{})
	kwHTTP := strings.TrimPrefix(kw.BaseURL, "http://")
	var (
		mu   sync.Mutex
		seen http.Header
	)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = r.Header.Clone()
		mu.Unlock()
		fmt.Fprintln(w, "api")
	}))
	t.Cleanup(api.Close)

	httpPort, grpcPort, authPort := freePort(t), freePort(t), freePort(t)
	conf := string(readFile(t, filepath.Join(repoRoot(t), "deploy", "compose", "nginx.conf")))
	for _, r := range [][2]string{
		{"server keyward-1:8080;", "server " + kwHTTP + ";"},
		{"server keyward-2:8080;", "server " + kwHTTP + ";"},
		{"server keyward-1:9090;", "server " + kw.GRPCAddr + ";"},
		{"server keyward-2:9090;", "server " + kw.GRPCAddr + ";"},
		{"server api:3000;", "server " + strings.TrimPrefix(api.URL, "http://") + ";"},
		{"listen 8080;", "listen 127.0.0.1:" + httpPort + ";"},
		{"listen 9090 http2;", "listen 127.0.0.1:" + grpcPort + " http2;"},
		{"listen 8000;", "listen 127.0.0.1:" + authPort + ";"},
	} {
		if strings.Count(conf, r[0]) != 1 {
			t.Fatalf("deploy/compose/nginx.conf: want %q exactly once (the test replaces it)", r[0])
		}
		conf = strings.Replace(conf, r[0], r[1], 1)
	}
	startNginx(t, bin, conf, httpPort, grpcPort, authPort)

	// REST through the balancer.
	lb := "http://127.0.0.1:" + httpPort
	if resp := do(t, "GET", lb+"/healthz", "", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz through nginx: %s", resp.Status)
	}
	resp := do(t, "POST", lb+"/v1/keys", `{"displayName": "through nginx"}`, http.Header{"Authorization": {"Bearer " + kw.AdminKey}})
	var created struct {
		Key    struct{ KeyID string }
		Secret string
	}
	if err := json.NewDecoder(resp.Body).Decode(&created); err != nil || resp.StatusCode != http.StatusOK || created.Secret == "" {
		t.Fatalf("POST /v1/keys through nginx: %s, %v", resp.Status, err)
	}

	// gRPC (h2c) through the balancer.
	conn, err := grpc.NewClient("127.0.0.1:"+grpcPort, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := keywardv1.NewKeyServiceClient(conn).Validate(ctx, &keywardv1.ValidateRequest{Key: created.Secret})
	if err != nil || !v.GetValid() {
		t.Fatalf("Validate through nginx: %v, %v", v, err)
	}
	if h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("grpc.health.v1 Check through nginx: %v, %v", h, err)
	}

	// Forward-auth in front of the API.
	fa := "http://127.0.0.1:" + authPort
	resp = do(t, "GET", fa+"/orders", "", http.Header{"X-Api-Key": {created.Secret}, "X-Keyward-Key-Id": {"forged"}})
	mu.Lock()
	got := seen
	mu.Unlock()
	if resp.StatusCode != http.StatusOK || got.Get("X-Keyward-Key-Id") != created.Key.KeyID || got.Get("X-Api-Key") != "" {
		t.Errorf("an allowed request: %s; the API saw key id %q and x-api-key %q", resp.Status, got.Get("X-Keyward-Key-Id"), got.Get("X-Api-Key"))
	}
	resp = do(t, "GET", fa+"/orders", "", nil)
	var refusal struct{ Reason string }
	if err := json.NewDecoder(resp.Body).Decode(&refusal); err != nil || resp.StatusCode != http.StatusUnauthorized || refusal.Reason != "REASON_MALFORMED" {
		t.Errorf("a request without a key: %s, %+v, %v", resp.Status, refusal, err)
	}
}

// do sends one request; the body is read into memory and closed.
func do(t *testing.T, method, url, body string, h http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	resp.Body.Close()
	resp.Body = nopCloser{&buf}
	return resp
}

type nopCloser struct{ *bytes.Buffer }

func (nopCloser) Close() error { return nil }

// nginxBinary finds Debian's nginx (in /usr/sbin, which a user's PATH may
// lack). Missing: fatal when CI=true, a loud skip otherwise.
func nginxBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx"
	}
	testenv.Require(t, "nginx", fmt.Errorf("nginx is not installed; `make ci-deps` or `apt-get install nginx-light`"))
	return ""
}

// startNginx runs site (an http-level config) in a private foreground
// nginx until t ends, and waits until every port listens.
func startNginx(t *testing.T, bin, site string, ports ...string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "site.conf"), []byte(site), 0o644); err != nil {
		t.Fatal(err)
	}
	main := fmt.Sprintf(`daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log stderr warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    include %[1]s/site.conf;
}
`, dir)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	cmd := exec.Command(bin, "-p", dir, "-e", "stderr", "-c", filepath.Join(dir, "nginx.conf"))
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGQUIT) // graceful
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("nginx log:\n%s", logs.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for _, port := range ports {
		for {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, 200*time.Millisecond)
			if err == nil {
				c.Close()
				break
			}
			select {
			case err := <-done:
				t.Fatalf("nginx exited (%v):\n%s", err, logs.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("nginx did not listen on %s within 10s:\n%s", port, logs.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}
