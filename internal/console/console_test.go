package console

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, method, path string, header map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestHandler(t *testing.T) {
	h := New()
	v := h.Version()
	if len(v) != 16 {
		t.Fatalf("Version() = %q, want 16 hex digits", v)
	}
	for _, tc := range []struct {
		name, method, path string
		header             map[string]string
		status             int
		contentType        string
		cacheControl       string
	}{
		{"ok/page", "GET", "/", nil, 200, "text/html; charset=utf-8", "no-cache"},
		{"ok/page-head", "HEAD", "/", nil, 200, "text/html; charset=utf-8", "no-cache"},
		{"ok/script", "GET", "/assets/" + v + "/app.js", nil, 200, "text/javascript; charset=utf-8", "public, max-age=31536000, immutable"},
		{"ok/style", "GET", "/assets/" + v + "/style.css", nil, 200, "text/css; charset=utf-8", "public, max-age=31536000, immutable"},
		{"ok/icon", "GET", "/assets/" + v + "/favicon.svg", nil, 200, "image/svg+xml", "public, max-age=31536000, immutable"},
		{"ok/other-build-not-cached", "GET", "/assets/0123456789abcdef/app.js", nil, 200, "text/javascript; charset=utf-8", "no-cache"},
		{"fail/unknown-asset", "GET", "/assets/" + v + "/nope.js", nil, 404, "", ""},
		{"fail/page-under-assets", "GET", "/assets/" + v + "/index.html", nil, 404, "", ""},
		{"fail/traversal", "GET", "/assets/" + v + "/../console.go", nil, 404, "", ""},
		{"fail/unknown-path", "GET", "/index.html", nil, 404, "", ""},
		{"fail/other-path", "GET", "/v2/keys", nil, 404, "", ""},
		{"fail/post", "POST", "/", nil, 405, "", ""},
		{"fail/delete-asset", "DELETE", "/assets/" + v + "/app.js", nil, 405, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := get(t, h, tc.method, tc.path, tc.header)
			if rec.Code != tc.status {
				t.Fatalf("%s %s: status %d, want %d", tc.method, tc.path, rec.Code, tc.status)
			}
			hdr := rec.Header()
			// Security headers on every answer, errors included.
			csp := hdr.Get("Content-Security-Policy")
			for _, want := range []string{"default-src 'none'", "script-src 'self'", "frame-ancestors 'none'", "connect-src 'self'", "base-uri 'none'"} {
				if !strings.Contains(csp, want) {
					t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
				}
			}
			if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
				t.Errorf("Content-Security-Policy %q allows inline or eval", csp)
			}
			for k, want := range map[string]string{
				"X-Content-Type-Options": "nosniff",
				"Referrer-Policy":        "no-referrer",
				"X-Frame-Options":        "DENY",
			} {
				if got := hdr.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			if tc.status == 405 && hdr.Get("Allow") != "GET, HEAD" {
				t.Errorf("Allow = %q, want \"GET, HEAD\"", hdr.Get("Allow"))
			}
			if tc.status != 200 {
				return
			}
			if got := hdr.Get("Content-Type"); got != tc.contentType {
				t.Errorf("Content-Type = %q, want %q", got, tc.contentType)
			}
			if got := hdr.Get("Cache-Control"); got != tc.cacheControl {
				t.Errorf("Cache-Control = %q, want %q", got, tc.cacheControl)
			}
			etag := hdr.Get("ETag")
			if etag == "" {
				t.Fatal("no ETag")
			}
			if tc.method == "HEAD" {
				if rec.Body.Len() != 0 {
					t.Errorf("HEAD has a body of %d bytes", rec.Body.Len())
				}
				return
			}
			if rec.Body.Len() == 0 {
				t.Error("empty body")
			}
			again := get(t, h, "GET", tc.path, map[string]string{"If-None-Match": etag})
			if again.Code != http.StatusNotModified {
				t.Errorf("GET with If-None-Match %s: status %d, want 304", etag, again.Code)
			}
		})
	}
}

// The page references its files under the versioned path, has no inline
// script or style (the CSP would block them), and loads nothing from
// another origin: the console must work offline.
func TestPageIsSelfContained(t *testing.T) {
	h := New()
	page := get(t, h, "GET", "/", nil).Body.String()
	refs := regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllStringSubmatch(page, -1)
	if len(refs) == 0 {
		t.Fatal("the page references no files")
	}
	for _, m := range refs {
		ref := m[1]
		if strings.HasPrefix(ref, "#") {
			continue
		}
		if !strings.HasPrefix(ref, "/assets/"+h.Version()+"/") {
			t.Errorf("the page references %q, want /assets/%s/…", ref, h.Version())
			continue
		}
		if rec := get(t, h, "GET", ref, nil); rec.Code != 200 {
			t.Errorf("GET %s: %d", ref, rec.Code)
		}
	}
	if regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]`).MatchString(page) {
		t.Error("the page has an inline script")
	}
	if regexp.MustCompile(`\sstyle=`).MatchString(page) || strings.Contains(page, "<style") {
		t.Error("the page has an inline style")
	}
	if regexp.MustCompile(`\son[a-z]+=`).MatchString(page) {
		t.Error("the page has an inline event handler")
	}

	root, _ := fs.Sub(static, "static")
	importRe := regexp.MustCompile(`from '([^']+)'`)
	err := fs.WalkDir(root, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(root, name)
		if err != nil {
			return err
		}
		if regexp.MustCompile(`https?://`).Match(body) && !strings.HasSuffix(name, ".svg") {
			t.Errorf("%s mentions an absolute URL; the console must not load anything from elsewhere", name)
		}
		if strings.HasSuffix(name, ".js") {
			for _, m := range importRe.FindAllStringSubmatch(string(body), -1) {
				if !strings.HasPrefix(m[1], "./") {
					t.Errorf("%s imports %q; want a relative path (./x.js)", name, m[1])
					continue
				}
				if _, err := fs.Stat(root, strings.TrimPrefix(m[1], "./")); err != nil {
					t.Errorf("%s imports %q, which is not embedded", name, m[1])
				}
			}
			if strings.Contains(string(body), "innerHTML") || strings.Contains(string(body), "insertAdjacentHTML") {
				t.Errorf("%s builds HTML from strings; build elements instead (Trusted Types forbid it)", name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Every element the scripts look up by id exists in the page.
func TestScriptsFindTheirElements(t *testing.T) {
	page, err := fs.ReadFile(static, "static/index.html")
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, m := range regexp.MustCompile(`\sid="([^"]+)"`).FindAllStringSubmatch(string(page), -1) {
		ids[m[1]] = true
	}
	lookup := regexp.MustCompile(`(?:\$|getElementById)\('([^']+)'\)`)
	scripts, err := fs.Glob(static, "static/*.js")
	if err != nil || len(scripts) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	for _, name := range scripts {
		body, err := fs.ReadFile(static, name)
		if err != nil {
			t.Fatal(err)
		}
		found := lookup.FindAllStringSubmatch(string(body), -1)
		if len(found) == 0 && name == "static/app.js" {
			t.Fatalf("%s: found no element lookups; has the helper changed?", name)
		}
		for _, m := range found {
			if !ids[m[1]] {
				t.Errorf("%s looks up #%s, which index.html does not have", name, m[1])
			}
		}
	}
}

// The console is mounted at "/" beside the server's own routes; the patterns
// must not conflict (ServeMux panics on a conflict).
func TestMountsBesideTheAPI(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("/v1/", http.NotFoundHandler())
	mux.HandleFunc("GET /openapi.json", func(http.ResponseWriter, *http.Request) {})
	mux.HandleFunc("GET /healthz", func(http.ResponseWriter, *http.Request) {})
	mux.HandleFunc("GET /readyz", func(http.ResponseWriter, *http.Request) {})
	mux.Handle("/", New())
	if rec := get(t, mux, "GET", "/", nil); rec.Code != 200 || !strings.Contains(rec.Body.String(), "<title>") {
		t.Errorf("GET / through the mux: %d", rec.Code)
	}
	if rec := get(t, mux, "GET", "/v1/keys", nil); rec.Header().Get("Content-Security-Policy") != "" {
		t.Error("the console answered for /v1/keys")
	}
}
