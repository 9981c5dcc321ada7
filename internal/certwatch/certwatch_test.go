package certwatch

import (
	"bytes"
	"crypto/tls"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testpki"
)

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func newWatcher(t *testing.T, ca *testpki.CA) (*Watcher, *clock, *syncBuffer, string) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile := ca.Server(t).WriteFiles(t, dir, "tls")
	clk := &clock{now: time.Now()}
	logs := &syncBuffer{}
	w, err := New(Options{CertFile: certFile, KeyFile: keyFile, Logger: slog.New(slog.NewTextHandler(logs, nil)), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return w, clk, logs, dir
}

func TestReload(t *testing.T) {
	ca := testpki.NewCA(t, "ca")
	w, clk, logs, dir := newWatcher(t, ca)
	first := w.Certificate().Leaf

	next := ca.Server(t)
	next.WriteFiles(t, dir, "tls")
	if got := w.Certificate().Leaf; !got.Equal(first) {
		t.Fatalf("ok/throttled: reloaded before the interval passed")
	}
	clk.Add(1100 * time.Millisecond)
	got := w.Certificate().Leaf
	if got.SerialNumber.Cmp(next.Cert.SerialNumber) != 0 {
		t.Fatalf("ok/reloaded: serial %v, want %v", got.SerialNumber, next.Cert.SerialNumber)
	}
	if !w.Serves(got) || !w.Serves(first) {
		t.Errorf("Serves: current %v, previous %v; want both", w.Serves(got), w.Serves(first))
	}
	if other := testpki.NewCA(t, "other").Server(t).Cert; w.Serves(other) {
		t.Errorf("Serves: a foreign certificate is served")
	}
	if !strings.Contains(logs.String(), "TLS certificate reloaded") {
		t.Errorf("no reload logged:\n%s", logs)
	}
	if w.Loads() != 2 {
		t.Errorf("Loads = %d, want 2", w.Loads())
	}

	// Unchanged files are not read again.
	clk.Add(2 * time.Second)
	w.Certificate()
	if w.Loads() != 2 {
		t.Errorf("ok/unchanged: Loads = %d, want 2", w.Loads())
	}
}

func TestBadReloadKeepsServing(t *testing.T) {
	ca := testpki.NewCA(t, "ca")
	w, clk, logs, dir := newWatcher(t, ca)
	good := w.Certificate().Leaf

	// A new certificate whose key has not been written yet: a mismatch.
	next := ca.Server(t)
	testpki.WriteFile(t, filepath.Join(dir, "tls.crt"), next.CertPEM)
	clk.Add(time.Second)
	if got := w.Certificate().Leaf; !got.Equal(good) {
		t.Fatal("fail/mismatched-pair: the bad pair replaced the good one")
	}
	if !strings.Contains(logs.String(), "do not load") || !strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("fail/mismatched-pair: not logged as an error:\n%s", logs)
	}
	// The same bad files are not retried (nor logged) at every check.
	n := strings.Count(logs.String(), "do not load")
	clk.Add(time.Second)
	w.Certificate()
	if m := strings.Count(logs.String(), "do not load"); m != n {
		t.Errorf("unchanged bad files logged again: %d times, then %d", n, m)
	}

	// The key arrives: the pair loads.
	testpki.WriteFile(t, filepath.Join(dir, "tls.key"), next.KeyPEM)
	clk.Add(time.Second)
	if got := w.Certificate().Leaf; got.SerialNumber.Cmp(next.Cert.SerialNumber) != 0 {
		t.Fatalf("ok/completed-pair: serial %v, want %v", got.SerialNumber, next.Cert.SerialNumber)
	}

	// Garbage, or a file that disappears, changes nothing either.
	served := w.Certificate().Leaf
	testpki.WriteFile(t, filepath.Join(dir, "tls.crt"), []byte("garbage"))
	clk.Add(time.Second)
	if !w.Certificate().Leaf.Equal(served) {
		t.Error("fail/garbage: replaced the served certificate")
	}
	os.Remove(filepath.Join(dir, "tls.crt"))
	clk.Add(time.Second)
	if !w.Certificate().Leaf.Equal(served) {
		t.Error("fail/removed: replaced the served certificate")
	}
}

func TestNewRefuses(t *testing.T) {
	ca := testpki.NewCA(t, "ca")
	dir := t.TempDir()
	certFile, keyFile := ca.Server(t).WriteFiles(t, dir, "a")
	_, otherKey := ca.Server(t).WriteFiles(t, dir, "b")
	notPEM := filepath.Join(dir, "ca.txt")
	os.WriteFile(notPEM, []byte("nothing"), 0o600)
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"fail/no-files", Options{}, "both a certificate and a key"},
		{"fail/mismatch", Options{CertFile: certFile, KeyFile: otherKey}, "private key does not match"},
		{"fail/missing", Options{CertFile: filepath.Join(dir, "x.crt"), KeyFile: keyFile}, "no such file"},
		{"fail/client-ca", Options{CertFile: certFile, KeyFile: keyFile, ClientCAFile: notPEM}, "holds no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestHandshake checks ServerConfig against a real TLS client: the served
// certificate changes between handshakes, and client certificates are
// verified against the client CA only when one is configured.
func TestHandshake(t *testing.T) {
	ca := testpki.NewCA(t, "ca")
	clientCA := testpki.NewCA(t, "client-ca")
	dir := t.TempDir()
	certFile, keyFile := ca.Server(t).WriteFiles(t, dir, "tls")
	caFile := filepath.Join(dir, "client-ca.pem")
	testpki.WriteFile(t, caFile, clientCA.PEM)
	clk := &clock{now: time.Now()}
	w, err := New(Options{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile, Now: clk.Now, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	handshake := func(clientCerts ...tls.Certificate) (*tls.ConnectionState, *tls.ConnectionState, error) {
		l, err := tls.Listen("tcp", "127.0.0.1:0", w.ServerConfig(tls.VerifyClientCertIfGiven, "h2"))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		srv := make(chan *tls.ConnectionState, 1)
		go func() {
			c, err := l.Accept()
			if err != nil {
				srv <- nil
				return
			}
			defer c.Close()
			tc := c.(*tls.Conn)
			if tc.Handshake() != nil {
				srv <- nil
				return
			}
			st := tc.ConnectionState()
			srv <- &st
		}()
		cfg := &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", NextProtos: []string{"h2"}}
		if len(clientCerts) > 0 {
			// Offer the certificate even if the server does not name its issuer.
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &clientCerts[0], nil }
		}
		c, err := tls.Dial("tcp", l.Addr().String(), cfg)
		if err != nil {
			<-srv
			return nil, nil, err
		}
		defer c.Close()
		st := c.ConnectionState()
		// In TLS 1.3 the client finishes before the server has checked its
		// certificate: the server's side decides.
		sst := <-srv
		if sst == nil {
			return nil, nil, errors.New("the server refused the handshake")
		}
		return &st, sst, nil
	}

	cst, sst, err := handshake()
	if err != nil {
		t.Fatalf("ok/no-client-cert: %v", err)
	}
	if cst.NegotiatedProtocol != "h2" || len(sst.PeerCertificates) != 0 {
		t.Errorf("ok/no-client-cert: ALPN %q, peer certs %d", cst.NegotiatedProtocol, len(sst.PeerCertificates))
	}
	_, sst, err = handshake(clientCA.Issue(t, testpki.LeafOptions{CommonName: "orders", Client: true}).TLSCertificate(t))
	if err != nil || len(sst.VerifiedChains) == 0 {
		t.Fatalf("ok/client-cert: err %v", err)
	}
	if _, _, err = handshake(ca.Issue(t, testpki.LeafOptions{CommonName: "intruder", Client: true}).TLSCertificate(t)); err == nil {
		t.Error("fail/foreign-client-cert: handshake succeeded")
	}

	next := ca.Server(t)
	next.WriteFiles(t, dir, "tls")
	clk.Add(time.Second)
	cst, _, err = handshake()
	if err != nil {
		t.Fatal(err)
	}
	if got := cst.PeerCertificates[0].SerialNumber; got.Cmp(next.Cert.SerialNumber) != 0 {
		t.Errorf("ok/reloaded: handshake served serial %v, want %v", got, next.Cert.SerialNumber)
	}
}
