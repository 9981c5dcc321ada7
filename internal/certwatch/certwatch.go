// Package certwatch serves a TLS certificate, and optionally a client CA
// bundle, from files, and picks up new files without a restart: at most once
// per interval, a handshake checks whether the files changed (modification
// time, size, or the file itself, as when Kubernetes swaps a mounted
// secret's symlink) and, if so, loads them. A pair that does not load — a
// half-written file, a key that does not match — is logged and the previous
// one stays in use, so a bad rotation never takes the listeners down.
package certwatch

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Options names the files to serve.
type Options struct {
	CertFile string // PEM certificate, leaf first, then intermediates
	KeyFile  string // PEM private key of the leaf
	// ClientCAFile, if set, verifies client certificates presented to
	// listeners whose config asks for them (ServerConfig).
	ClientCAFile string
	// Interval is the least time between two checks of the files; default 1s.
	Interval time.Duration
	Logger   *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Watcher holds the current certificate and reloads it when its files change.
type Watcher struct {
	o    Options
	log  *slog.Logger
	next atomic.Int64 // unix nanos before which no check is due

	mu    sync.Mutex          // serialises checks and loads
	seen  [3]os.FileInfo      // the files as of the last load attempt
	cur   atomic.Pointer[set] // what handshakes use
	prev  atomic.Pointer[x509.Certificate]
	loads atomic.Int64
}

// set is one successfully loaded generation of the files.
type set struct {
	cert      *tls.Certificate
	clientCAs *x509.CertPool // nil without Options.ClientCAFile
}

// New loads the files once; unlike a later reload, a failure here is an error.
func New(o Options) (*Watcher, error) {
	if o.CertFile == "" || o.KeyFile == "" {
		return nil, errors.New("certwatch: both a certificate and a key file are needed")
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	w := &Watcher{o: o, log: o.Logger}
	if w.log == nil {
		w.log = slog.Default()
	}
	w.seen = w.stat()
	s, err := w.load()
	if err != nil {
		return nil, err
	}
	w.cur.Store(s)
	w.next.Store(o.Now().Add(o.Interval).UnixNano())
	return w, nil
}

// Certificate is the certificate handshakes use now, after checking the
// files if a check is due. Its Leaf is set.
func (w *Watcher) Certificate() *tls.Certificate {
	w.maybeReload()
	return w.cur.Load().cert
}

// Loads counts successful loads, the first included (for tests and logs).
func (w *Watcher) Loads() int64 { return w.loads.Load() }

// ServerConfig returns a server configuration that takes the current
// certificate (and client CAs) at every handshake. nextProtos are the ALPN
// protocols of the listener. clientAuth applies only with a client CA file:
// tls.VerifyClientCertIfGiven checks a certificate a client offers, and
// leaves it to the application to demand one where it must.
func (w *Watcher) ServerConfig(clientAuth tls.ClientAuthType, nextProtos ...string) *tls.Config {
	base := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: nextProtos}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: nextProtos,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			w.maybeReload()
			s := w.cur.Load()
			c := base.Clone()
			c.Certificates = []tls.Certificate{*s.cert}
			if s.clientCAs != nil {
				c.ClientCAs = s.clientCAs
				c.ClientAuth = clientAuth
			}
			return c, nil
		},
	}
}

// Serves reports whether leaf is the certificate handshakes use now, or the
// one before it (a handshake may have started just before a reload). An
// in-process client uses it to trust exactly its own server.
func (w *Watcher) Serves(leaf *x509.Certificate) bool {
	if leaf == nil {
		return false
	}
	if cur := w.cur.Load().cert.Leaf; cur != nil && cur.Equal(leaf) {
		return true
	}
	prev := w.prev.Load()
	return prev != nil && prev.Equal(leaf)
}

// maybeReload checks the files if a check is due, and loads them if they
// changed since the last attempt.
func (w *Watcher) maybeReload() {
	now := w.o.Now()
	if now.UnixNano() < w.next.Load() {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if now.UnixNano() < w.next.Load() {
		return // another handshake checked meanwhile
	}
	w.next.Store(now.Add(w.o.Interval).UnixNano())
	files := w.stat()
	if !changed(w.seen, files) {
		return
	}
	w.seen = files
	s, err := w.load()
	if err != nil {
		w.log.Error("TLS files changed but do not load; still serving the previous certificate",
			"cert_file", w.o.CertFile, "key_file", w.o.KeyFile, "err", err)
		return
	}
	old := w.cur.Swap(s)
	w.prev.Store(old.cert.Leaf)
	leaf := s.cert.Leaf
	w.log.Info("TLS certificate reloaded", "cert_file", w.o.CertFile,
		"subject", leaf.Subject.String(), "serial", leaf.SerialNumber.String(),
		"not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
}

// stat describes the files; a missing one is nil.
func (w *Watcher) stat() [3]os.FileInfo {
	var out [3]os.FileInfo
	for i, name := range []string{w.o.CertFile, w.o.KeyFile, w.o.ClientCAFile} {
		if name == "" {
			continue
		}
		if fi, err := os.Stat(name); err == nil {
			out[i] = fi
		}
	}
	return out
}

func changed(a, b [3]os.FileInfo) bool {
	for i := range a {
		switch {
		case a[i] == nil && b[i] == nil:
		case a[i] == nil || b[i] == nil:
			return true
		case !os.SameFile(a[i], b[i]) || !a[i].ModTime().Equal(b[i].ModTime()) || a[i].Size() != b[i].Size():
			return true
		}
	}
	return false
}

// load reads and checks every file.
func (w *Watcher) load() (*set, error) {
	cert, err := tls.LoadX509KeyPair(w.o.CertFile, w.o.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate %s and key %s: %w", w.o.CertFile, w.o.KeyFile, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("parse TLS certificate %s: %w", w.o.CertFile, err)
		}
	}
	if now := w.o.Now(); now.After(cert.Leaf.NotAfter) {
		w.log.Warn("the TLS certificate has expired", "cert_file", w.o.CertFile,
			"not_after", cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	s := &set{cert: &cert}
	if w.o.ClientCAFile != "" {
		pem, err := os.ReadFile(w.o.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("read client CA file: %w", err)
		}
		s.clientCAs = x509.NewCertPool()
		if !s.clientCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client CA file %s holds no PEM certificate", w.o.ClientCAFile)
		}
	}
	w.loads.Add(1)
	return s, nil
}
