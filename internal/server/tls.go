package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
)

// TLS is a source of server certificates (certwatch.Watcher).
type TLS interface {
	// ServerConfig returns a config that picks the current certificate at
	// each handshake, with these ALPN protocols; clientAuth applies where
	// client CAs are configured.
	ServerConfig(clientAuth tls.ClientAuthType, nextProtos ...string) *tls.Config
	// Serves reports whether leaf is (or just was) the served certificate.
	Serves(leaf *x509.Certificate) bool
}

// The REST gateway is a gRPC client of this server. It does not dial the
// public gRPC port: it reaches the same grpc.Server through an in-memory
// listener, so REST calls pass the same interceptors without a loopback
// hop, need no client certificate when the gRPC port demands them, and
// cannot be impersonated from the network (see isGateway).

// gatewayBuffer is the in-memory connection's buffer per direction.
const gatewayBuffer = 1 << 20

// gatewayListener accepts the gateway's in-memory connections.
type gatewayListener struct{ *bufconn.Listener }

func (l gatewayListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return gatewayConn{c}, nil
}

func (l gatewayListener) Addr() net.Addr { return gatewayAddr{} }

// gatewayConn marks a server-side connection as the gateway's: its remote
// address has a type no network connection can have.
type gatewayConn struct{ net.Conn }

func (gatewayConn) RemoteAddr() net.Addr { return gatewayAddr{} }
func (gatewayConn) LocalAddr() net.Addr  { return gatewayAddr{} }

type gatewayAddr struct{}

func (gatewayAddr) Network() string { return "keyward-gateway" }
func (gatewayAddr) String() string  { return "rest-gateway" }

// isGateway reports whether a call's peer is the in-process REST gateway.
func isGateway(addr net.Addr) bool {
	_, ok := addr.(gatewayAddr)
	return ok
}

// grpcServerOptions are the gRPC server's transport credentials: TLS with
// client certificates verified if offered (interceptors decide where one
// is required), or none.
func (s *Server) grpcServerOptions() []grpc.ServerOption {
	if s.o.TLS == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.Creds(credentials.NewTLS(s.o.TLS.ServerConfig(tls.VerifyClientCertIfGiven, "h2")))}
}

// dialGateway connects the gateway to the in-memory listener. With TLS the
// server insists on a handshake there too; the gateway then trusts exactly
// the certificate this process serves (Serves), whatever names it carries:
// there is no network in between to protect.
func (s *Server) dialGateway() (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if s.o.TLS != nil {
		creds = credentials.NewTLS(&tls.Config{
			MinVersion: tls.VersionTLS12,
			// Chain and name checks are replaced by the exact match below.
			InsecureSkipVerify: true, //nolint:gosec // pinned in VerifyConnection
			VerifyConnection: func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 || !s.o.TLS.Serves(cs.PeerCertificates[0]) {
					return errors.New("gateway: the in-memory peer is not this server")
				}
				return nil
			},
		})
	}
	lis := s.gwLis
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return lis.DialContext(ctx)
		}),
	}
	return grpc.NewClient("passthrough:///rest-gateway", append(opts, s.o.DialOptions...)...)
}

// httpTLSConfig is the HTTP listener's TLS configuration; nil without TLS.
// Client certificates are not asked for there.
func (s *Server) httpTLSConfig() *tls.Config {
	if s.o.TLS == nil {
		return nil
	}
	return s.o.TLS.ServerConfig(tls.NoClientCert, "h2", "http/1.1")
}
