package server

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/abuse"
	"github.com/keyward/keyward/internal/clientaddr"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/validate"
)

// guardValidate runs Validate under the failed-validation throttle
// (internal/abuse): REST calls, which reach it through the gateway, are
// keyed by the HTTP client's address, gRPC calls by the peer's. An address
// over its budget gets RESOURCE_EXHAUSTED with RetryInfo at once — HTTP 429
// with Retry-After through the gateway — and Validate is not called.
func (i interceptors) guardValidate(ctx context.Context, req any, handler grpc.UnaryHandler) (any, error) {
	p, _ := peer.FromContext(ctx)
	rest := p != nil && isGateway(p.Addr)
	surface := abuse.GRPC
	if rest {
		surface = abuse.REST
	}
	if !i.abuse.On(surface) {
		return handler(ctx, req)
	}
	var addr netip.Addr
	if rest {
		addr = gatewayClient(ctx, i.hops)
	} else if p != nil {
		addr = clientaddr.Parse(p.Addr.String())
	}
	pass, retry, ok := i.abuse.Admit(surface, addr)
	if !ok {
		return nil, throttledError(retry)
	}
	resp, err := handler(ctx, req)
	r, _ := resp.(*keywardv1.ValidateResponse)
	pass.Done(err == nil && failedReasons[r.GetReason()])
	return resp, err
}

// failedReasons are the keyward.v1 reasons whose refusals abuse.Failed
// counts. (validate.Reason's names are keyward.v1's in lower case.)
var failedReasons = func() map[keywardv1.ValidateResponse_Reason]bool {
	out := map[keywardv1.ValidateResponse_Reason]bool{}
	for r := validate.ReasonValid; r <= validate.ReasonUsageExceeded; r++ {
		if abuse.Failed(r) {
			v, ok := keywardv1.ValidateResponse_Reason_value["REASON_"+strings.ToUpper(r.String())]
			if !ok {
				panic("server: no keyward.v1 reason for " + r.String())
			}
			out[keywardv1.ValidateResponse_Reason(v)] = true
		}
	}
	return out
}()

// throttledREST answers a REST Validate from a client address that has no
// budget of failed validations left before the gateway parses it, exactly
// as guardValidate would (429, Retry-After, the gateway's JSON error), at a
// fraction of the cost: under a flood, most requests end here. Whether a
// request fails is still counted by guardValidate, behind the gateway.
func (s *Server) throttledREST(gw *runtime.ServeMux, next http.Handler) http.Handler {
	if !s.o.Abuse.On(abuse.REST) {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != restValidateRoute {
			next.ServeHTTP(w, r)
			return
		}
		vs := r.Header.Values("X-Forwarded-For")
		if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			vs = append(vs[:len(vs):len(vs)], host) // as the gateway passes them on
		}
		retry, blocked := s.o.Abuse.Blocked(abuse.REST, clientOf(vs, s.o.TrustedProxyHops))
		if !blocked {
			next.ServeHTTP(w, r)
			return
		}
		if rq, ok := r.Context().Value(requestKey{}).(*request); ok {
			rq.route = restValidateRoute // for the HTTP metrics and log line, as the gateway names it
		}
		_, out := runtime.MarshalerForRequest(gw, r)
		err := toStatus(r.Context(), s.log, keywardv1.KeyService_Validate_FullMethodName, throttledError(retry))
		errorHandler(r.Context(), gw, out, w, r, err)
	})
}

// restValidateRoute is Validate's REST path, and its route as the gateway names it.
const restValidateRoute = "/v1/keys:validate"

func throttledError(retry time.Duration) error {
	return &keys.RetryLaterError{What: "failed key validations from this address", RetryAfter: retry}
}

// gatewayClient is the address of the HTTP client of a call from the REST
// gateway, which sends every X-Forwarded-For value of the HTTP request and
// then the connection's peer, comma-separated, as x-forwarded-for.
func gatewayClient(ctx context.Context, hops int) netip.Addr {
	md, _ := metadata.FromIncomingContext(ctx)
	return clientOf(md.Get("x-forwarded-for"), hops)
}

// clientOf is the client address in X-Forwarded-For values vs whose last
// entry is the connection's peer: that peer, or behind hops trusted proxies
// the matching entry left of it.
func clientOf(vs []string, hops int) netip.Addr { return clientaddr.Forwarded(vs, hops+1) }

// setRetryAfter gives a RESOURCE_EXHAUSTED answer that carries RetryInfo
// (a throttled Validate, or a limit of the service) its Retry-After header,
// in whole seconds rounded up, as HTTP clients expect of a 429.
func setRetryAfter(w http.ResponseWriter, err error) {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.ResourceExhausted {
		return
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			secs := (ri.GetRetryDelay().AsDuration() + time.Second - 1) / time.Second
			w.Header().Set("Retry-After", strconv.FormatInt(int64(max(secs, 1)), 10))
			return
		}
	}
}
