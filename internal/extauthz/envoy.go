package extauthz

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/validate"
)

// CheckMethod is the full gRPC method name Envoy calls.
const CheckMethod = "/envoy.service.auth.v3.Authorization/Check"

// Register serves envoy.service.auth.v3.Authorization on g. The service is
// described by go-control-plane's descriptors (so reflection and grpcurl
// know it), but its handler reads the request from the wire (see wire.go).
func (a *Authz) Register(g *grpc.Server) {
	g.RegisterService(&grpc.ServiceDesc{
		ServiceName: authv3.Authorization_ServiceDesc.ServiceName,
		HandlerType: (*authv3.AuthorizationServer)(nil),
		Methods:     []grpc.MethodDesc{{MethodName: "Check", Handler: handleCheck}},
		Metadata:    authv3.Authorization_ServiceDesc.Metadata,
	}, a)
}

// handleCheck has the shape of the generated handler, but decodes nothing:
// every field is unknown to an Empty, so proto.Unmarshal keeps the request's
// bytes as they came. The interceptors see the call as usual.
func handleCheck(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	in := new(emptypb.Empty)
	if err := dec(in); err != nil {
		return nil, err
	}
	a := srv.(*Authz)
	if interceptor == nil {
		return a.check(ctx, in.ProtoReflect().GetUnknown())
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: CheckMethod}
	return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
		return a.check(ctx, req.(*emptypb.Empty).ProtoReflect().GetUnknown())
	})
}

// Check is Envoy's Check for callers in process (tests); it takes the same
// path as a call over gRPC.
func (a *Authz) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	b, err := proto.Marshal(req)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, "cannot encode CheckRequest")
	}
	return a.check(ctx, b)
}

// okStatus is shared by every allowing response: messages are only read
// while marshalled.
var okStatus = &rpcstatus.Status{Code: int32(codes.OK)}

// check answers one Envoy ext_authz request. A refusal, and a failure to
// verify, are answers (a DeniedHttpResponse), never gRPC errors: Envoy would
// treat an error by its failure_mode_allow, and Keyward never lets an
// unverified request through, however the filter is configured.
func (a *Authz) check(ctx context.Context, req []byte) (*authv3.CheckResponse, error) {
	var v checkView
	if err := v.parse(req); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	query := ""
	if a.queryParam != "" {
		path := v.path
		if len(path) == 0 {
			path, _ = v.lookup(":path")
		}
		query = queryOf(string(path))
	}
	secret, found := a.credential(func(c *credHeader) (string, int) {
		val, n := v.lookup(c.name)
		if n == 0 {
			return "", 0
		}
		return string(val), n
	}, query)
	var scopes []string
	if len(v.scopes) > 0 {
		scopes = appendScopes(nil, string(v.scopes))
	}
	environment := ""
	if len(v.environment) > 0 {
		environment = string(v.environment)
	}
	var xff []string
	if a.hops > 0 {
		v.each(func(name, value []byte) {
			if equalFold(name, "x-forwarded-for") {
				xff = append(xff, string(value))
			}
		})
	}
	verdict, res := a.decide(ctx, found, validate.Request{
		Secret: secret, RequiredScopes: scopes, Environment: environment,
		ClientIP: clientIP(string(v.source), xff, a.hops), Entry: validate.EntryCheck,
	})
	if verdict != allowed {
		d := a.denials[verdict].envoy
		if res.RetryAfter > 0 || res.HasRate {
			d = withLimitHeaders(d, &res)
		}
		return d, nil
	}

	ok := &authv3.OkHttpResponse{Headers: a.envoyIdentity(res.Key)}
	if res.HasRate {
		limitHeaders(&res, func(name, value string) {
			ok.ResponseHeadersToAdd = append(ok.ResponseHeadersToAdd, overwrite(name, value))
		})
	}
	// Envoy removes after it sets: remove only the client's identity headers
	// Keyward did not just set; the ones it set are overwritten.
	v.each(func(name, _ []byte) {
		if hasIdentityPrefix(name) {
			if n := string(name); !setsHeader(ok.Headers, n) {
				ok.HeadersToRemove = append(ok.HeadersToRemove, n)
			}
		}
	})
	if a.strip {
		for i := range a.creds {
			c := &a.creds[i]
			if _, n := v.lookup(c.name); n > 0 {
				if ok.HeadersToRemove == nil {
					ok.HeadersToRemove = c.remove // shared, read-only
				} else {
					ok.HeadersToRemove = append(ok.HeadersToRemove, c.name)
				}
			}
		}
	}
	if query != "" {
		if _, present := queryValue(query, a.queryParam); present {
			ok.QueryParametersToRemove = a.queryRemove // shared, read-only
		}
	}
	return &authv3.CheckResponse{
		Status:       okStatus,
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok},
	}, nil
}

// identity is the rendering of one key snapshot's identity headers.
type identity struct {
	key     *keys.Key
	options []*corev3.HeaderValueOption
}

// envoyIdentity renders k's identity headers. Cached snapshots are shared
// and never modified, so their rendering is kept (in a small table indexed
// by the key's hash) and shared by every response for them.
func (a *Authz) envoyIdentity(k *keys.Key) []*corev3.HeaderValueOption {
	var slot *atomic.Pointer[identity]
	if len(k.Hash) > 0 {
		slot = &a.identities[k.Hash[0]]
		if id := slot.Load(); id != nil && id.key == k {
			return id.options
		}
	}
	opts := make([]*corev3.HeaderValueOption, 0, 3+len(a.meta))
	a.eachIdentity(k, func(f *field, value string) {
		opts = append(opts, &corev3.HeaderValueOption{
			Header: &corev3.HeaderValue{Key: f.name, Value: value},
			// Replace whatever the client sent under this name. (The
			// default, APPEND_IF_EXISTS_OR_ADD, would keep its value.)
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		})
	})
	if slot != nil {
		slot.Store(&identity{key: k, options: opts})
	}
	return opts
}

func setsHeader(set []*corev3.HeaderValueOption, name string) bool {
	for _, o := range set {
		if strings.EqualFold(o.GetHeader().GetKey(), name) {
			return true
		}
	}
	return false
}

// envoyDenial renders a refusal once, for every call that ends in it.
func envoyDenial(d *denial) *authv3.CheckResponse {
	code := codes.PermissionDenied
	switch d.status {
	case http.StatusUnauthorized:
		code = codes.Unauthenticated
	case http.StatusServiceUnavailable:
		code = codes.Unavailable
	case http.StatusTooManyRequests:
		code = codes.ResourceExhausted
	}
	hdr := overwrite
	headers := []*corev3.HeaderValueOption{hdr("content-type", "application/json")}
	switch d.status {
	case http.StatusUnauthorized:
		headers = append(headers, hdr("www-authenticate", Challenge))
	case http.StatusServiceUnavailable:
		headers = append(headers, hdr("retry-after", "1"))
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code), Message: d.message},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(d.status)},
			Headers: headers,
			Body:    d.body,
		}},
	}
}

func overwrite(name, value string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: name, Value: value},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

// withLimitHeaders is a precomputed refusal plus the rate-limit headers of
// this one (Retry-After, X-RateLimit-*).
func withLimitHeaders(base *authv3.CheckResponse, res *validate.Result) *authv3.CheckResponse {
	denied := base.GetDeniedResponse()
	headers := append([]*corev3.HeaderValueOption(nil), denied.GetHeaders()...)
	limitHeaders(res, func(name, value string) { headers = append(headers, overwrite(name, value)) })
	return &authv3.CheckResponse{
		Status: base.GetStatus(),
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status: denied.GetStatus(), Headers: headers, Body: denied.GetBody(),
		}},
	}
}
