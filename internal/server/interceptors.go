package server

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/keys"
)

// Authenticator checks an admin bearer token.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (*keys.Key, error)
}

// public lists the only methods callable without an admin credential.
// Everything else is denied by default, so a new RPC cannot slip through.
var public = map[string]bool{
	keywardv1.KeyService_Validate_FullMethodName: true,
}

// publicServices are whole services open to callers: probes, reflection and
// the authorization check that proxies call on every request.
var publicServices = []string{
	"/grpc.health.v1.Health/",
	"/grpc.reflection.",
	"/envoy.service.auth.v3.Authorization/",
}

func isPublic(method string) bool {
	if public[method] {
		return true
	}
	for _, p := range publicServices {
		if strings.HasPrefix(method, p) {
			return true
		}
	}
	return false
}

func bearer(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
			return strings.TrimSpace(v[7:])
		}
	}
	return ""
}

type interceptors struct {
	auth Authenticator
	log  *slog.Logger
}

func (i interceptors) authorize(ctx context.Context, method string) error {
	if isPublic(method) {
		return nil
	}
	_, err := i.auth.Authenticate(ctx, bearer(ctx))
	return err
}

// unary authenticates, maps errors to status codes in one place, and logs.
// Request and response bodies are never logged: they carry secrets.
func (i interceptors) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := func() (any, error) {
		if err := i.authorize(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}()
	err = toStatus(ctx, i.log, info.FullMethod, err)
	// Successful Validate and Check calls are the hot path and are not logged
	// one by one; metrics count them.
	if err != nil || !isPublic(info.FullMethod) {
		i.log.InfoContext(ctx, "rpc", "method", info.FullMethod, "code", status.Code(err).String(), "duration", time.Since(start))
	}
	return resp, err
}

func (i interceptors) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := i.authorize(ss.Context(), info.FullMethod); err != nil {
		return toStatus(ss.Context(), i.log, info.FullMethod, err)
	}
	return toStatus(ss.Context(), i.log, info.FullMethod, handler(srv, ss))
}
