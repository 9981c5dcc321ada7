package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
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

	"github.com/keyward/keyward/internal/keymat"
	"github.com/keyward/keyward/internal/testenv"
)

// upstream is the API behind a proxy: it answers 200 and records the
// headers of every request it receives.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	seen []http.Header
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		h := r.Header.Clone()
		h.Set(":path", r.URL.RequestURI())
		u.seen = append(u.seen, h)
		u.mu.Unlock()
		io.WriteString(w, "upstream ok\n")
	}))
	t.Cleanup(u.Close)
	return u
}

// count is how many requests reached the upstream so far.
func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.seen)
}

// last is the headers of the latest request that reached the upstream.
func (u *upstream) last(t *testing.T) http.Header {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.seen) == 0 {
		t.Fatal("no request reached the upstream")
	}
	return u.seen[len(u.seen)-1]
}

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

// startNginx runs deploy/nginx/keyward.conf, unmodified but for the three
// addresses in it, in a private nginx on a free loopback port, and returns
// that port's base URL. nginx stops when t ends.
func startNginx(t *testing.T, keywardHTTP, api string) string {
	t.Helper()
	bin := nginxBinary(t)
	conf, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "nginx", "keyward.conf"))
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	site := string(conf)
	for _, r := range [][2]string{
		{"server 127.0.0.1:8080;", "server " + keywardHTTP + ";"},
		{"server 127.0.0.1:3000;", "server " + api + ";"},
		{"listen 8000;", "listen " + port + ";"},
	} {
		if strings.Count(site, r[0]) != 1 {
			t.Fatalf("deploy/nginx/keyward.conf: want %q exactly once (the test replaces it)", r[0])
		}
		site = strings.Replace(site, r[0], r[1], 1)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "keyward.conf"), []byte(site), 0o644); err != nil {
		t.Fatal(err)
	}
	// One process, in the foreground, everything under dir.
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
    include %[1]s/keyward.conf;
}
`, dir)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	var logMu sync.Mutex
	cmd := exec.Command(bin, "-p", dir, "-e", "stderr", "-c", filepath.Join(dir, "nginx.conf"))
	cmd.Stdout = lockedWriter{&logMu, &logs}
	cmd.Stderr = lockedWriter{&logMu, &logs}
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
			logMu.Lock()
			t.Logf("nginx log:\n%s", logs.String())
			logMu.Unlock()
		}
	})
	addr := "127.0.0.1:" + port
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		select {
		case err := <-done:
			logMu.Lock()
			defer logMu.Unlock()
			t.Fatalf("nginx exited (%v):\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx did not listen on %s within 10s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "http://" + addr
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
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

// proxied is one answer through the proxy.
type proxied struct {
	status int
	header http.Header
	body   string
}

func through(t *testing.T, base, method, path string, header http.Header) proxied {
	t.Helper()
	req, err := http.NewRequest(method, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s through the proxy: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return proxied{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

// refused asserts a refusal: status, the JSON body's reason, and the
// challenge on 401.
func (p proxied) refused(t *testing.T, what string, status int, reason string) {
	t.Helper()
	if p.status != status {
		t.Fatalf("%s: status %d, want %d; body %q", what, p.status, status, p.body)
	}
	var body struct{ Error, Reason string }
	if err := json.Unmarshal([]byte(p.body), &body); err != nil || body.Error == "" || body.Reason != reason {
		t.Errorf("%s: body %q, want {\"error\": …, \"reason\": %q}", what, p.body, reason)
	}
	if ct := p.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: content-type %q", what, ct)
	}
	if got := p.header.Values("Www-Authenticate"); status == 401 && (len(got) != 1 || got[0] != `Bearer realm="keyward"`) {
		t.Errorf("%s: WWW-Authenticate %q, want exactly [Bearer realm=\"keyward\"]", what, got)
	}
}

// TestNginxAuthRequest puts Debian's nginx, configured by
// deploy/nginx/keyward.conf, in front of a small API, with auth_request
// asking a real `keyward serve` at /v1/auth.
func TestNginxAuthRequest(t *testing.T) {
	t.Parallel()
	// Its revocation check hammers one disabled key from one client, which
	// the forward-auth throttle (docs/abuse.md) would rightly answer 429.
	s := startServerWith(t, serverOptions{DataDir: t.TempDir(), Args: []string{"--auth-forward-metadata", "team", "--abuse-throttle-surfaces", "rest"}})
	api := startUpstream(t)
	base := startNginx(t, s.HTTPAddr, strings.TrimPrefix(api.URL, "http://"))

	reader, readerSecret := s.createKey(t, `{"displayName": "reader", "scopes": ["orders:read", "stock:read"], "metadata": {"team": "mes"}}`)
	_, bareSecret := s.createKey(t, `{"displayName": "bare"}`)
	_, testSecret := s.createKey(t, `{"displayName": "test env", "environment": "test", "scopes": ["orders:write"]}`)
	disabled, disabledSecret := s.createKey(t, `{"displayName": "disabled"}`)
	s.call(t, "POST", "/v1/keys/"+keyID(disabled)+":disable", "", true).want(t, http.StatusOK)
	secrets := []string{readerSecret, bareSecret, testSecret, disabledSecret}

	// noSecret asserts that no header the upstream saw carries a key.
	noSecret := func(t *testing.T, h http.Header) {
		t.Helper()
		for name, vs := range h {
			for _, v := range vs {
				if containsAny(v, secrets...) || strings.Contains(v, "kw_") {
					t.Errorf("the upstream saw a key in %s", name)
				}
			}
		}
	}

	t.Run("ok/x-api-key-with-spoofed-identity", func(t *testing.T) {
		before := api.count()
		p := through(t, base, "GET", "/orders/42?expand=lines", http.Header{
			"X-Api-Key":        {readerSecret},
			"X-Keyward-Key-Id": {"key_SPOOFED"}, "X-Keyward-Scopes": {"keyward:admin"}, "X-Keyward-Meta-Team": {"root"},
		})
		if p.status != 200 || p.body != "upstream ok\n" {
			t.Fatalf("status %d, body %q; want the upstream's 200", p.status, p.body)
		}
		if api.count() != before+1 {
			t.Fatalf("%d requests reached the upstream, want 1", api.count()-before)
		}
		h := api.last(t)
		for name, want := range map[string]string{
			"X-Keyward-Key-Id": keyID(reader), "X-Keyward-Environment": "live",
			"X-Keyward-Scopes": "orders:read,stock:read", "X-Keyward-Meta-Team": "mes", ":path": "/orders/42?expand=lines",
		} {
			if got := h.Values(name); len(got) != 1 || got[0] != want {
				t.Errorf("upstream saw %s = %q, want exactly %q", name, got, want)
			}
		}
		if h.Get("X-Api-Key") != "" {
			t.Error("upstream saw X-Api-Key")
		}
		noSecret(t, h)
	})

	t.Run("ok/bearer", func(t *testing.T) {
		p := through(t, base, "GET", "/anything", http.Header{"Authorization": {"Bearer " + bareSecret}})
		if p.status != 200 {
			t.Fatalf("status %d %q", p.status, p.body)
		}
		h := api.last(t)
		if h.Get("Authorization") != "" {
			t.Error("upstream saw Authorization")
		}
		// The key has no scopes and no metadata: a client's values for
		// those names must not survive either.
		if h.Get("X-Keyward-Environment") != "live" || h.Values("X-Keyward-Scopes") != nil || h.Values("X-Keyward-Meta-Team") != nil {
			t.Errorf("upstream saw %v", h)
		}
		noSecret(t, h)
	})

	t.Run("ok/spoof-without-scopes", func(t *testing.T) {
		p := through(t, base, "GET", "/anything", http.Header{"X-Api-Key": {bareSecret}, "X-Keyward-Scopes": {"orders:write"}, "X-Keyward-Meta-Team": {"root"}})
		if p.status != 200 {
			t.Fatalf("status %d %q", p.status, p.body)
		}
		if h := api.last(t); h.Values("X-Keyward-Scopes") != nil || h.Values("X-Keyward-Meta-Team") != nil {
			t.Errorf("a client's X-Keyward-Scopes/-Meta-Team reached the upstream: %v", h)
		}
	})

	t.Run("ok/no-key-for-healthz", func(t *testing.T) {
		if p := through(t, base, "GET", "/healthz", nil); p.status != 200 {
			t.Fatalf("status %d %q", p.status, p.body)
		}
	})

	before := api.count()
	t.Run("refused/missing", func(t *testing.T) {
		through(t, base, "GET", "/orders/42", nil).refused(t, "no key", 401, "REASON_MALFORMED")
	})
	t.Run("refused/malformed", func(t *testing.T) {
		mistyped := readerSecret[:20] + "0000" + readerSecret[24:]
		through(t, base, "GET", "/anything", http.Header{"X-Api-Key": {mistyped}}).refused(t, "mistyped key", 401, "REASON_MALFORMED")
	})
	t.Run("refused/unknown", func(t *testing.T) {
		unknown, err := keymat.Generate("live")
		if err != nil {
			t.Fatal(err)
		}
		through(t, base, "GET", "/anything", http.Header{"X-Api-Key": {unknown.String()}}).refused(t, "unknown key", 401, "REASON_NOT_FOUND")
	})
	t.Run("refused/disabled", func(t *testing.T) {
		through(t, base, "GET", "/anything", http.Header{"X-Api-Key": {disabledSecret}}).refused(t, "disabled key", 403, "REASON_DISABLED")
	})
	t.Run("refused/route-scope", func(t *testing.T) {
		through(t, base, "POST", "/orders", http.Header{"X-Api-Key": {readerSecret}}).refused(t, "POST /orders with orders:read", 403, "REASON_INSUFFICIENT_SCOPE")
	})
	t.Run("refused/route-environment", func(t *testing.T) {
		through(t, base, "DELETE", "/orders/42", http.Header{"X-Api-Key": {testSecret}}).refused(t, "DELETE /orders with a test key", 403, "REASON_WRONG_ENVIRONMENT")
	})
	if n := api.count() - before; n != 0 {
		t.Errorf("%d refused requests reached the upstream", n)
	}

	t.Run("refused/disabled-while-traffic-flows", func(t *testing.T) {
		key, secret := s.createKey(t, `{"displayName": "flowing"}`)
		h := http.Header{"X-Api-Key": {secret}}
		if p := through(t, base, "GET", "/anything", h); p.status != 200 {
			t.Fatalf("before disabling: %d %q", p.status, p.body)
		}
		type answer struct {
			start  time.Time
			status int
		}
		var (
			mu      sync.Mutex
			answers []answer
			stop    = make(chan struct{})
			wg      sync.WaitGroup
		)
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					start := time.Now()
					req, _ := http.NewRequest("GET", base+"/anything", nil)
					req.Header.Set("X-Api-Key", secret)
					resp, err := httpClient.Do(req)
					if err != nil {
						continue
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					mu.Lock()
					answers = append(answers, answer{start, resp.StatusCode})
					mu.Unlock()
				}
			}()
		}
		time.Sleep(300 * time.Millisecond)
		s.call(t, "POST", "/v1/keys/"+keyID(key)+":disable", "", true).want(t, http.StatusOK)
		disabledAt := time.Now()
		through(t, base, "GET", "/anything", h).refused(t, "the next request after DisableKey returned", 403, "REASON_DISABLED")
		time.Sleep(300 * time.Millisecond)
		close(stop)
		wg.Wait()
		var allowedBefore, after int
		for _, a := range answers {
			switch {
			case a.start.Before(disabledAt):
				if a.status == 200 {
					allowedBefore++
				}
			case a.status != 403:
				t.Errorf("a request started %v after DisableKey returned got %d, want 403", a.start.Sub(disabledAt), a.status)
			default:
				after++
			}
		}
		if allowedBefore == 0 || after == 0 {
			t.Errorf("the load saw %d allowed requests before and %d refused after: want both", allowedBefore, after)
		}
		t.Logf("%d requests allowed before DisableKey returned, %d refused after", allowedBefore, after)
	})

	t.Run("refused/keyward-down-fails-closed", func(t *testing.T) {
		s.Stop(t)
		before := api.count()
		through(t, base, "GET", "/anything", http.Header{"X-Api-Key": {readerSecret}}).refused(t, "keyward stopped", 503, "REASON_UNSPECIFIED")
		if api.count() != before {
			t.Error("a request reached the upstream while keyward was down")
		}
	})
}
