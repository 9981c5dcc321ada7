package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// contentSecurityPolicy allows scripts, styles and fetches from this origin
// only, no inline script or style, no plugins, no framing, no form posts and
// no DOM sinks that parse HTML (Trusted Types with no policy).
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; " +
	"img-src 'self'; connect-src 'self'; manifest-src 'self'; base-uri 'none'; " +
	"form-action 'none'; frame-ancestors 'none'; " +
	"require-trusted-types-for 'script'; trusted-types 'none'"

// contentTypes are the types of the files the console embeds; a file of
// another type is not served.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
}

// asset is one file, ready to serve.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

// Handler serves the console: the page at "/" and its files under
// /assets/<version>/. Anything else is 404, and methods other than GET and
// HEAD are 405. Mount it at "/" on the HTTP listener's mux.
type Handler struct {
	version string
	index   asset
	assets  map[string]asset
}

// New returns the console's handler. It reads the embedded files once.
func New() *Handler {
	h, err := newHandler(static)
	if err != nil {
		// The files are compiled in; failing here is a build mistake.
		panic(fmt.Sprintf("console: %v", err))
	}
	return h
}

func newHandler(fsys fs.FS) (*Handler, error) {
	root, err := fs.Sub(fsys, "static")
	if err != nil {
		return nil, err
	}
	h := &Handler{assets: map[string]asset{}}
	sum := sha256.New()
	var page []byte
	err = fs.WalkDir(root, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(root, name)
		if err != nil {
			return err
		}
		fmt.Fprintf(sum, "%s\x00%d\x00", name, len(body))
		sum.Write(body)
		if name == "index.html" {
			page = body
			return nil
		}
		ct, ok := contentTypes[path.Ext(name)]
		if !ok {
			return fmt.Errorf("%s: no content type for %q files", name, path.Ext(name))
		}
		h.assets[name] = newAsset(body, ct)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if page == nil {
		return nil, fmt.Errorf("static/index.html is missing")
	}
	h.version = hex.EncodeToString(sum.Sum(nil))[:16]
	tmpl, err := template.New("index.html").Parse(string(page))
	if err != nil {
		return nil, fmt.Errorf("parse index.html: %w", err)
	}
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, struct{ Assets string }{"/assets/" + h.version}); err != nil {
		return nil, fmt.Errorf("render index.html: %w", err)
	}
	h.index = newAsset(buf.Bytes(), contentTypes[".html"])
	return h, nil
}

func newAsset(body []byte, contentType string) asset {
	sum := sha256.Sum256(body)
	return asset{body: body, contentType: contentType, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
}

// Version identifies this build's files; it is part of every asset's path.
func (h *Handler) Version() string { return h.version }

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Content-Security-Policy", contentSecurityPolicy)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("Cross-Origin-Opener-Policy", "same-origin")
	hdr.Set("Cross-Origin-Resource-Policy", "same-origin")
	hdr.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=(), usb=()")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hdr.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p := r.URL.Path
	switch {
	case p == "/":
		// Revalidated on every load, so a new version's page (and with it
		// the new asset paths) is picked up at once.
		h.serve(w, r, h.index, "no-cache")
	case strings.HasPrefix(p, "/assets/"):
		version, name, _ := strings.Cut(strings.TrimPrefix(p, "/assets/"), "/")
		a, ok := h.assets[name]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if version != h.version {
			// A page from another build (say, mid-upgrade behind a
			// balancer): serve what we have, but do not let it stick.
			h.serve(w, r, a, "no-cache")
			return
		}
		h.serve(w, r, a, "public, max-age=31536000, immutable")
	default:
		http.NotFound(w, r)
	}
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request, a asset, cacheControl string) {
	w.Header().Set("Content-Type", a.contentType)
	w.Header().Set("Cache-Control", cacheControl)
	w.Header().Set("ETag", a.etag)
	// ServeContent answers If-None-Match with 304, and HEAD and ranges.
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}
