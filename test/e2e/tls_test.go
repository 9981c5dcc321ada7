package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"math/big"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/testenv"
	"github.com/keyward/keyward/internal/testpki"
)

// TestTLS runs a real `keyward serve` with TLS on both listeners and client
// certificates on the gRPC listener, configured through a YAML file, with a
// CA and certificates made here. It checks REST over HTTPS (Go's client and
// curl), gRPC Validate and Check per client certificate, admin calls with the
// bearer token and no certificate, and that a certificate replaced on disk
// is served by new handshakes without a restart.
func TestTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testpki.NewCA(t, "keyward-test-server-ca")
	clientCA := testpki.NewCA(t, "keyward-test-client-ca")
	certFile, keyFile := ca.Server(t).WriteFiles(t, dir, "tls")
	caFile := filepath.Join(dir, "ca.pem")
	testpki.WriteFile(t, caFile, ca.PEM)
	clientCAFile := filepath.Join(dir, "client-ca.pem")
	testpki.WriteFile(t, clientCAFile, clientCA.PEM)

	orders := clientCA.Issue(t, testpki.LeafOptions{CommonName: "orders", Client: true})
	mesh := clientCA.Issue(t, testpki.LeafOptions{CommonName: "sidecar", URIs: []string{"spiffe://prod/ns/shop/sa/cart"}, Client: true})
	intruder := clientCA.Issue(t, testpki.LeafOptions{CommonName: "intruder", Client: true})
	foreign := testpki.NewCA(t, "someone-else").Issue(t, testpki.LeafOptions{CommonName: "orders", Client: true})

	configFile := filepath.Join(dir, "keyward.yaml")
	testpki.WriteFile(t, configFile, []byte(strings.Join([]string{
		"tls-cert-file: " + certFile,
		"tls-key-file: " + keyFile,
		"grpc-client-ca-file: " + clientCAFile,
		"grpc-client-subjects:",
		"  - orders",
		"  - spiffe://prod/ns/shop/sa/cart",
		"",
	}, "\n")))
	s := startServerWith(t, serverOptions{DataDir: t.TempDir(), Args: []string{"--config", configFile}})
	if !strings.HasPrefix(s.BaseURL, "https://") {
		t.Fatalf("BaseURL = %q, want https://", s.BaseURL)
	}

	// --- REST over HTTPS ---
	https := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy:             nil,
		TLSClientConfig:   &tls.Config{RootCAs: ca.Pool()},
		ForceAttemptHTTP2: true,
	}}
	rest := func(t *testing.T, method, path, body string, admin bool) (int, map[string]any) {
		t.Helper()
		req, err := http.NewRequest(method, s.BaseURL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if admin {
			req.Header.Set("Authorization", "Bearer "+s.AdminKey)
		}
		resp, err := https.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		if resp.TLS == nil || resp.ProtoMajor != 2 {
			t.Errorf("%s %s: TLS %v, protocol %s; want TLS and HTTP/2", method, path, resp.TLS != nil, resp.Proto)
		}
		raw, _ := io.ReadAll(resp.Body)
		var m map[string]any
		json.Unmarshal(raw, &m)
		return resp.StatusCode, m
	}
	var secret string
	t.Run("rest", func(t *testing.T) {
		if code, m := rest(t, "GET", "/healthz", "", false); code != 200 || m["status"] != "ok" {
			t.Errorf("GET /healthz: %d %v", code, m)
		}
		code, m := rest(t, "POST", "/v1/keys", `{"displayName": "tls e2e"}`, true)
		if code != 200 {
			t.Fatalf("POST /v1/keys: %d %v", code, m)
		}
		secret, _ = m["secret"].(string)
		// REST Validate goes through the in-process gateway, which the gRPC
		// listener's client-certificate policy does not apply to.
		if code, m := rest(t, "POST", "/v1/keys:validate", `{"key": "`+secret+`"}`, false); code != 200 || m["valid"] != true {
			t.Errorf("POST /v1/keys:validate: %d %v", code, m)
		}
		if code, _ := rest(t, "GET", "/v1/keys", "", false); code != http.StatusUnauthorized {
			t.Errorf("GET /v1/keys without the admin key: %d, want 401", code)
		}
		// Plain HTTP to the TLS port gets nothing useful.
		resp, err := httpClient.Get("http://" + s.HTTPAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Error("plain HTTP to the TLS listener answered 200")
			}
		}
	})
	if secret == "" {
		t.Fatal("no key to validate")
	}

	t.Run("curl", func(t *testing.T) {
		_, err := exec.LookPath("curl")
		testenv.Require(t, "curl", err)
		out, err := exec.Command("curl", "-sS", "--fail", "--cacert", caFile, "-H", "authorization: Bearer "+s.AdminKey,
			"-X", "POST", "-d", `{"displayName": "made by curl"}`, s.BaseURL+"/v1/keys").CombinedOutput()
		if err != nil || !strings.Contains(string(out), `"secret"`) {
			t.Errorf("curl POST /v1/keys: %v\n%s", err, out)
		}
		out, err = exec.Command("curl", "-sS", "--fail", "--http2", "-o", "/dev/null", "-w", "%{http_version}", "--cacert", caFile, s.BaseURL+"/readyz").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "2" {
			t.Errorf("curl --http2 /readyz: %v, HTTP version %q", err, out)
		}
		// Without the CA curl must refuse the certificate.
		if out, err := exec.Command("curl", "-sS", "--fail", s.BaseURL+"/healthz").CombinedOutput(); err == nil {
			t.Errorf("curl without --cacert trusted the test CA:\n%s", out)
		}
	})

	// --- gRPC with and without client certificates ---
	dial := func(t *testing.T, cert *testpki.Leaf) *grpc.ClientConn {
		t.Helper()
		cfg := &tls.Config{RootCAs: ca.Pool()}
		if cert != nil {
			c := cert.TLSCertificate(t)
			// Offer it even when the server does not list its issuer.
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
		}
		cc, err := grpc.NewClient(s.GRPCAddr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	callCtx := func(t *testing.T) context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		t.Cleanup(cancel)
		return ctx
	}
	validate := func(t *testing.T, cert *testpki.Leaf) (*keywardv1.ValidateResponse, error) {
		return keywardv1.NewKeyServiceClient(dial(t, cert)).Validate(callCtx(t), &keywardv1.ValidateRequest{Key: secret})
	}
	check := func(t *testing.T, cert *testpki.Leaf) error {
		_, err := authv3.NewAuthorizationClient(dial(t, cert)).Check(callCtx(t), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Method: "GET", Path: "/orders", Headers: map[string]string{"x-api-key": secret},
			}},
		}})
		return err
	}
	for _, tc := range []struct {
		name string
		cert *testpki.Leaf
		want codes.Code
	}{
		{"ok/allowed-cn", orders, codes.OK},
		{"ok/allowed-uri-san", mesh, codes.OK},
		{"refused/not-allowed", intruder, codes.PermissionDenied},
		{"refused/no-cert", nil, codes.Unauthenticated},
		{"refused/foreign-ca", foreign, codes.Unavailable}, // the handshake fails
	} {
		t.Run("grpc-validate/"+tc.name, func(t *testing.T) {
			resp, err := validate(t, tc.cert)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("Validate: %v (%v), want %v", got, err, tc.want)
			}
			if tc.want == codes.OK && !resp.GetValid() {
				t.Errorf("Validate: %v, want valid", resp)
			}
		})
		t.Run("grpc-check/"+tc.name, func(t *testing.T) {
			if got := status.Code(check(t, tc.cert)); got != tc.want {
				t.Fatalf("Check: %v, want %v", got, tc.want)
			}
		})
	}

	t.Run("grpc-admin/bearer-without-cert", func(t *testing.T) {
		ctx := metadata.AppendToOutgoingContext(callCtx(t), "authorization", "Bearer "+s.AdminKey)
		resp, err := keywardv1.NewKeyServiceClient(dial(t, nil)).CreateKey(ctx, &keywardv1.CreateKeyRequest{Key: &keywardv1.Key{DisplayName: "over grpc+tls"}})
		if err != nil || resp.GetSecret() == "" {
			t.Fatalf("CreateKey with the admin key over TLS: %v", err)
		}
		// A certificate does not replace the admin key.
		_, err = keywardv1.NewKeyServiceClient(dial(t, orders)).ListKeys(callCtx(t), &keywardv1.ListKeysRequest{})
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("ListKeys with a client certificate and no admin key: %v, want Unauthenticated", err)
		}
	})

	t.Run("cli", func(t *testing.T) {
		adminKeyFile := filepath.Join(s.DataDir, "admin.key")
		stdout, stderr, code, _ := runKeyward(t, 30*time.Second, "keys", "create", "--name", "made by the cli",
			"--server", s.GRPCAddr, "--tls-ca-file", caFile, "--admin-key-file", adminKeyFile, "-o", "json")
		if code != 0 || !strings.Contains(stdout, "secret") {
			t.Errorf("keyward keys create --tls-ca-file: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
		if _, _, code, _ := runKeyward(t, 30*time.Second, "keys", "list", "--timeout", "3s",
			"--server", s.GRPCAddr, "--admin-key-file", adminKeyFile); code == 0 {
			t.Error("keyward keys list in plaintext against the TLS listener succeeded")
		}
	})

	t.Run("grpc-plaintext-refused", func(t *testing.T) {
		cc, err := grpc.NewClient(s.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if _, err := keywardv1.NewKeyServiceClient(cc).Validate(ctx, &keywardv1.ValidateRequest{Key: secret}); err == nil {
			t.Error("plaintext gRPC to the TLS listener succeeded")
		}
	})

	// --- rotation without a restart ---
	t.Run("reload", func(t *testing.T) {
		old := servedCert(t, s.GRPCAddr, ca)
		next := ca.Server(t)
		if next.Cert.SerialNumber.Cmp(old.SerialNumber) == 0 {
			t.Fatal("the new certificate has the old serial")
		}
		next.WriteFiles(t, dir, "tls")
		for _, l := range []struct{ name, addr string }{{"grpc", s.GRPCAddr}, {"http", s.HTTPAddr}} {
			deadline := time.Now().Add(10 * time.Second)
			var got *big.Int
			for {
				got = servedCert(t, l.addr, ca).SerialNumber
				if got.Cmp(next.Cert.SerialNumber) == 0 || time.Now().After(deadline) {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if got.Cmp(next.Cert.SerialNumber) != 0 {
				t.Errorf("%s listener still serves serial %v, want %v", l.name, got, next.Cert.SerialNumber)
			}
		}
		if s.MsgCount("TLS certificate reloaded") == 0 {
			t.Error("no \"TLS certificate reloaded\" in the log")
		}
		// New connections work end to end with the new certificate: gRPC
		// with a client certificate, and REST through a fresh client.
		if resp, err := validate(t, orders); err != nil || !resp.GetValid() {
			t.Errorf("Validate after the reload: %v %v", resp, err)
		}
		https.CloseIdleConnections()
		if code, m := rest(t, "GET", "/v1/keys", "", true); code != 200 {
			t.Errorf("GET /v1/keys after the reload: %d %v", code, m)
		}

		// A broken pair on disk keeps the last good certificate in service.
		testpki.WriteFile(t, certFile, []byte("not a certificate"))
		time.Sleep(1500 * time.Millisecond) // past the check interval
		if got := servedCert(t, s.GRPCAddr, ca).SerialNumber; got.Cmp(next.Cert.SerialNumber) != 0 {
			t.Errorf("after a broken write: serving serial %v, want %v still", got, next.Cert.SerialNumber)
		}
		if !s.WaitMsg("TLS files changed but do not load; still serving the previous certificate", 1, 5*time.Second) {
			t.Error("the broken certificate file was not logged")
		}
	})
}

// servedCert makes a new TLS handshake with addr and returns the server's
// certificate, verified against ca.
func servedCert(t *testing.T, addr string, ca *testpki.CA) *x509.Certificate {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{RootCAs: ca.Pool(), NextProtos: []string{"h2"}, ServerName: "localhost"})
	if err != nil {
		t.Fatalf("TLS handshake with %s: %v", addr, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}
