package server

import (
	"context"
	"crypto/x509"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
)

// clientCertMethods are the calls that need a verified client certificate
// when client certificates are configured: the answers to "is this key
// allowed?". Management calls are authorised by the admin bearer token
// instead, and health and reflection stay open to probes.
func clientCertMethod(method string) bool {
	return method == keywardv1.KeyService_Validate_FullMethodName ||
		strings.HasPrefix(method, "/envoy.service.auth.v3.Authorization/")
}

// clientCerts is the mTLS policy of the gRPC listener. The TLS handshake
// verifies any certificate a client offers against the client CAs
// (tls.VerifyClientCertIfGiven); this check then demands one for Validate
// and Check, and that its subject be allowed. A nil *clientCerts demands
// nothing.
type clientCerts struct {
	// allowed are the accepted subjects (CN, DNS SAN, URI SAN); empty
	// accepts every certificate the CAs verified.
	allowed map[string]bool
}

func newClientCerts(enabled bool, subjects []string) *clientCerts {
	if !enabled {
		return nil
	}
	c := &clientCerts{allowed: map[string]bool{}}
	for _, s := range subjects {
		c.allowed[s] = true
	}
	return c
}

// authorize returns Unauthenticated for a call that needs a certificate and
// came without a verified one, PermissionDenied for one whose subject is not
// allowed. The in-process REST gateway is not asked: REST Validate and
// forward-auth on the HTTP listener are outside this policy.
func (c *clientCerts) authorize(ctx context.Context, method string) error {
	if c == nil || !clientCertMethod(method) {
		return nil
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, "a client certificate is required")
	}
	if isGateway(p.Addr) {
		return nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.PeerCertificates) == 0 {
		return status.Error(codes.Unauthenticated, "a client certificate is required for this method")
	}
	leaf := info.State.PeerCertificates[0]
	if len(c.allowed) == 0 || c.permits(leaf) {
		return nil
	}
	return status.Errorf(codes.PermissionDenied, "client certificate %q is not allowed to call this method", leaf.Subject.String())
}

// permits reports whether the certificate's CN, a DNS SAN (case-insensitive)
// or a URI SAN is allowed.
func (c *clientCerts) permits(leaf *x509.Certificate) bool {
	if cn := leaf.Subject.CommonName; cn != "" && c.allowed[cn] {
		return true
	}
	for _, d := range leaf.DNSNames {
		for a := range c.allowed {
			if strings.EqualFold(a, d) {
				return true
			}
		}
	}
	for _, u := range leaf.URIs {
		if c.allowed[u.String()] {
			return true
		}
	}
	return false
}
