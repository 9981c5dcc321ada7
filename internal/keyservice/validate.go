package keyservice

import (
	"context"
	"fmt"
	"net/netip"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/validate"
)

// Validate answers whether a presented secret may be used. A refusal is an
// answer (valid=false and a reason); only "cannot tell" is an error.
func (s *Service) Validate(ctx context.Context, req *keywardv1.ValidateRequest) (*keywardv1.ValidateResponse, error) {
	var ip netip.Addr
	if v := req.GetClientIp(); v != "" {
		var err error
		if ip, err = netip.ParseAddr(v); err != nil || ip.Zone() != "" {
			return nil, keys.Invalid("client_ip", "%q is not an IP address", truncate(v))
		}
	}
	res, err := s.verifier.Verify(ctx, validate.Request{
		Secret:         req.GetKey(),
		RequiredScopes: req.GetRequiredScopes(),
		Environment:    req.GetEnvironment(),
		ClientIP:       ip,
	})
	if err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	out := &keywardv1.ValidateResponse{Valid: res.Valid, Reason: reasons[res.Reason]}
	if res.RetryAfter > 0 {
		out.RetryAfter = durationpb.New(res.RetryAfter)
	}
	if res.HasRate {
		out.RateLimit = &keywardv1.RateLimitStatus{
			Limit: res.Rate.Limit, Remaining: res.Rate.Remaining, ResetAfter: durationpb.New(res.Rate.ResetAfter),
		}
	}
	if res.Valid {
		// The key may be a shared cached snapshot: render it once, reuse the
		// message (gRPC only reads it while marshalling).
		out.Key = res.Key.View(func(k *keys.Key) any { return s.validatedProto(k) }).(*keywardv1.Key)
		if res.HasQuota {
			// The snapshot's count is stale by design; show the one just taken.
			out.Key = proto.CloneOf(out.Key)
			out.Key.Quota.Remaining = res.RemainingUses
			out.RemainingUses = &res.RemainingUses
		}
	}
	return out, nil
}

// validatedProto renders a validated key. It leaves out recoverable:
// management information, which a snapshot from Redis (that never holds the
// sealed secret) could not tell.
func (s *Service) validatedProto(k *keys.Key) *keywardv1.Key {
	p := s.toProto(k)
	p.Recoverable = false
	return p
}
