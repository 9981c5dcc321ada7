package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
)

// recorder is a KeyService that keeps the last UpdateKey request and what
// authorization it came with.
type recorder struct {
	keywardv1.UnimplementedKeyServiceServer
	update *keywardv1.UpdateKeyRequest
	auth   []string
}

func (r *recorder) UpdateKey(ctx context.Context, req *keywardv1.UpdateKeyRequest) (*keywardv1.UpdateKeyResponse, error) {
	r.update = req
	md, _ := metadata.FromIncomingContext(ctx)
	r.auth = md.Get("authorization")
	return &keywardv1.UpdateKeyResponse{Key: req.GetKey()}, nil
}

func (r *recorder) Validate(ctx context.Context, req *keywardv1.ValidateRequest) (*keywardv1.ValidateResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	r.auth = md.Get("authorization")
	return &keywardv1.ValidateResponse{Valid: false, Reason: keywardv1.ValidateResponse_REASON_NOT_FOUND}, nil
}

func startRecorder(t *testing.T, opts ...grpc.ServerOption) (*recorder, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	s := grpc.NewServer(opts...)
	keywardv1.RegisterKeyServiceServer(s, rec)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return rec, lis.Addr().String()
}

// TestUpdateMask: the update mask is exactly the flags given, so an empty
// flag clears its field and an absent one leaves it alone.
func TestUpdateMask(t *testing.T) {
	rec, addr := startRecorder(t)
	t.Setenv("KEYWARD_ADMIN_KEY", "admin-key-for-the-test-0123456789")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"ok/description-only", []string{"--description", "d"}, "description"},
		{"ok/clear-expiry", []string{"--expire-time", ""}, "expire_time"},
		{"ok/every-field", []string{"--name", "n", "--scopes", "", "--metadata", "a=b", "--expire-time", "2030-01-01T00:00:00Z", "--description", ""},
			"display_name,description,scopes,metadata,expire_time"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"update", "key_1", "--server", addr, "--etag", "7"}, tc.args...)
			if err := keysCommand(context.Background(), args, nil, &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(rec.update.GetUpdateMask().GetPaths(), ","); got != tc.want {
				t.Errorf("mask %q, want %q", got, tc.want)
			}
			if rec.update.GetKey().GetKeyId() != "key_1" || rec.update.GetKey().GetEtag() != "7" {
				t.Errorf("key %v", rec.update.GetKey())
			}
			if len(rec.auth) != 1 || rec.auth[0] != "Bearer admin-key-for-the-test-0123456789" {
				t.Errorf("authorization %q", rec.auth)
			}
		})
	}
}

// TestValidateSendsNoAdminKey: Validate needs no credential, so the admin
// key is not sent to whatever answers on --server.
func TestValidateSendsNoAdminKey(t *testing.T) {
	rec, addr := startRecorder(t)
	t.Setenv("KEYWARD_ADMIN_KEY", "admin-key-for-the-test-0123456789")
	err := keysCommand(context.Background(), []string{"validate", "--server", addr}, strings.NewReader("kw_live_x\n"), &bytes.Buffer{}, &bytes.Buffer{})
	if exitCode(err) != exitRefused {
		t.Fatalf("exit code %d (%v), want %d", exitCode(err), err, exitRefused)
	}
	if len(rec.auth) != 0 {
		t.Errorf("validate sent authorization %q", rec.auth)
	}
}

func TestExitCodes(t *testing.T) {
	for c, want := range map[codes.Code]int{
		codes.Internal: exitFailure, codes.Unknown: exitFailure,
		codes.InvalidArgument: exitUsage, codes.NotFound: exitNotFound, codes.Aborted: exitConflict,
		codes.FailedPrecondition: exitConflict, codes.AlreadyExists: exitConflict,
		codes.Unauthenticated: exitUnauthorized, codes.PermissionDenied: exitUnauthorized,
		codes.Unavailable: exitUnavailable, codes.DeadlineExceeded: exitUnavailable,
	} {
		err := rpcError("keys get", status.Error(c, "boom"))
		if got := exitCode(err); got != want {
			t.Errorf("%v: exit code %d, want %d", c, got, want)
		}
		if !strings.Contains(err.Error(), c.String()) {
			t.Errorf("%v: message %q does not name the code", c, err)
		}
	}
	if got := exitCode(usageError("x")); got != exitUsage {
		t.Errorf("usage error: exit code %d", got)
	}
}

func TestParseMetadata(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		fail     bool
	}{
		{"", "", false},
		{"a=b, c = d=e", "a=b,c=d=e", false},
		{"a=", "a=", false},
		{"a", "", true},
		{"=b", "", true},
		{"a=1,a=2", "", true},
	} {
		md, err := parseMetadata(tc.in)
		if (err != nil) != tc.fail {
			t.Errorf("%q: err %v", tc.in, err)
			continue
		}
		if got := metadataText(md); !tc.fail && got != tc.want {
			t.Errorf("%q: %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestReadSecret(t *testing.T) {
	if s, err := readSecret(strings.NewReader("  kw_live_abc \nrest"), "stdin"); err != nil || s != "kw_live_abc" {
		t.Errorf("got %q, %v", s, err)
	}
	long := strings.Repeat("x", maxSecretLen+10)
	if _, err := readSecret(strings.NewReader(long), "stdin"); exitCode(err) != exitUsage || strings.Contains(err.Error(), long[:20]) {
		t.Errorf("an overlong line: %v", err)
	}
}

func TestDialable(t *testing.T) {
	for in, want := range map[string]string{
		"0.0.0.0:8080": "127.0.0.1:8080", ":8080": "127.0.0.1:8080", "[::]:8080": "[::1]:8080",
		"10.1.2.3:80": "10.1.2.3:80", "localhost:1": "localhost:1",
	} {
		if got, err := dialable(in); err != nil || got != want {
			t.Errorf("dialable(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// TestTLS: --tls-ca-file verifies the server against that CA; without it a
// TLS server is not reached (plaintext is the default).
func TestTLS(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "keyward test"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	_, addr := startRecorder(t, grpc.Creds(credentials.NewServerTLSFromCert(&cert)))
	validate := func(extra ...string) error {
		args := append([]string{"validate", "--server", addr, "--timeout", "5s"}, extra...)
		return keysCommand(context.Background(), args, strings.NewReader("kw_live_x\n"), &bytes.Buffer{}, &bytes.Buffer{})
	}
	if err := validate("--tls-ca-file", caFile); exitCode(err) != exitRefused {
		t.Errorf("with --tls-ca-file: exit code %d (%v), want %d from the server's answer", exitCode(err), err, exitRefused)
	}
	if err := validate("--tls"); exitCode(err) != exitUnavailable {
		t.Errorf("--tls with the system's CAs: exit code %d (%v), want %d (certificate not trusted)", exitCode(err), err, exitUnavailable)
	}
	if err := validate(); exitCode(err) != exitUnavailable {
		t.Errorf("plaintext to a TLS server: exit code %d (%v), want %d", exitCode(err), err, exitUnavailable)
	}
}
