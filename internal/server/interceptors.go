package server

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/abuse"
	"github.com/keyward/keyward/internal/audit"
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
	auth  Authenticator
	log   *slog.Logger
	obs   Observer     // nil: none
	certs *clientCerts // nil: no client certificates demanded (mtls.go)
	fails *signInFailures
	abuse *abuse.Throttle // nil: failed validations are not throttled (abuse.go)
	hops  int             // trusted proxies in front of the HTTP listener
}

// authorize checks the caller and returns ctx carrying who it is, for the
// audit trail (audit.ActorFrom).
func (i interceptors) authorize(ctx context.Context, method string) (context.Context, error) {
	if err := i.certs.authorize(ctx, method); err != nil {
		return ctx, err
	}
	if isPublic(method) {
		return ctx, nil
	}
	k, err := i.auth.Authenticate(ctx, bearer(ctx))
	if errors.Is(err, keys.ErrUnauthenticated) || errors.Is(err, keys.ErrPermissionDenied) {
		i.fails.record(ctx, method, err)
	}
	if err != nil {
		return ctx, err
	}
	return audit.WithActor(ctx, audit.Actor{KeyID: k.ID, Source: source(ctx)}), nil
}

// unary authenticates, maps errors to status codes in one place, and logs.
// Request and response bodies are never logged: they carry secrets.
func (i interceptors) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	ctx, rq, given := rpcRequest(ctx) // the request id, for the response and every log line (observe.go)
	resp, err := func() (any, error) {
		ctx, err := i.authorize(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		if i.abuse != nil && info.FullMethod == keywardv1.KeyService_Validate_FullMethodName {
			return i.guardValidate(ctx, req, handler)
		}
		return handler(ctx, req)
	}()
	err = toStatus(ctx, i.log, info.FullMethod, err)
	if given || err != nil || !isPublic(info.FullMethod) {
		returnRequestID(ctx, rq)
	}
	code, d := status.Code(err), time.Since(start)
	if i.obs != nil {
		i.obs.RPC(info.FullMethod, code, d)
	}
	// Successful Validate and Check calls are the hot path: one line each
	// only at debug level; metrics count them. So are throttled ones
	// (RESOURCE_EXHAUSTED), which come in floods: abuse logs those.
	level := slog.LevelInfo
	if (err == nil || code == codes.ResourceExhausted) && isPublic(info.FullMethod) {
		level = slog.LevelDebug
	}
	if i.log.Enabled(ctx, level) {
		i.log.LogAttrs(ctx, level, "rpc", slog.String("method", info.FullMethod),
			slog.String("code", code.String()), slog.Duration("duration", d))
	}
	return resp, err
}

func (i interceptors) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	start := time.Now()
	_, err := i.authorize(ss.Context(), info.FullMethod)
	if err == nil {
		err = handler(srv, ss)
	}
	err = toStatus(ss.Context(), i.log, info.FullMethod, err)
	if i.obs != nil {
		i.obs.RPC(info.FullMethod, status.Code(err), time.Since(start))
	}
	return err
}
