package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/testpki"
)

func TestClientCerts(t *testing.T) {
	ca := testpki.NewCA(t, "clients")
	orders := ca.Issue(t, testpki.LeafOptions{CommonName: "orders", Client: true}).Cert
	billing := ca.Issue(t, testpki.LeafOptions{CommonName: "x", DNSNames: []string{"Billing.internal"}, Client: true}).Cert
	spiffe := ca.Issue(t, testpki.LeafOptions{CommonName: "y", URIs: []string{"spiffe://prod/ns/shop/sa/cart"}, Client: true}).Cert
	other := ca.Issue(t, testpki.LeafOptions{CommonName: "other", DNSNames: []string{"orders.evil"}, Client: true}).Cert

	tcp := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4242}
	withCert := func(leaf *x509.Certificate) context.Context {
		st := tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}, VerifiedChains: [][]*x509.Certificate{{leaf, ca.Cert}}}
		return peer.NewContext(context.Background(), &peer.Peer{Addr: tcp, AuthInfo: credentials.TLSInfo{State: st}})
	}
	noCert := peer.NewContext(context.Background(), &peer.Peer{Addr: tcp, AuthInfo: credentials.TLSInfo{}})
	gateway := peer.NewContext(context.Background(), &peer.Peer{Addr: gatewayAddr{}, AuthInfo: credentials.TLSInfo{}})
	validate := keywardv1.KeyService_Validate_FullMethodName
	check := "/envoy.service.auth.v3.Authorization/Check"

	allowList := newClientCerts(true, []string{"orders", "billing.internal", "spiffe://prod/ns/shop/sa/cart"})
	anyCert := newClientCerts(true, nil)
	for _, tc := range []struct {
		name   string
		policy *clientCerts
		ctx    context.Context
		method string
		want   codes.Code
	}{
		{"ok/cn", allowList, withCert(orders), validate, codes.OK},
		{"ok/dns-san-any-case", allowList, withCert(billing), check, codes.OK},
		{"ok/uri-san", allowList, withCert(spiffe), validate, codes.OK},
		{"ok/any-verified-cert", anyCert, withCert(other), validate, codes.OK},
		{"ok/gateway", allowList, gateway, validate, codes.OK},
		{"ok/admin-call-needs-no-cert", allowList, noCert, keywardv1.KeyService_ListKeys_FullMethodName, codes.OK},
		{"ok/health-needs-no-cert", allowList, noCert, "/grpc.health.v1.Health/Check", codes.OK},
		{"ok/policy-off", nil, noCert, validate, codes.OK},
		{"refused/not-listed", allowList, withCert(other), validate, codes.PermissionDenied},
		{"refused/no-cert", allowList, noCert, validate, codes.Unauthenticated},
		{"refused/no-cert-check", anyCert, noCert, check, codes.Unauthenticated},
		{"refused/no-peer", allowList, context.Background(), validate, codes.Unauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.policy.authorize(tc.ctx, tc.method)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("code %v (%v), want %v", got, err, tc.want)
			}
		})
	}
}
