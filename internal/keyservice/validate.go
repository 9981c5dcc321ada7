package keyservice

import (
	"context"
	"fmt"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/validate"
)

// Validate answers whether a presented secret may be used. A refusal is an
// answer (valid=false and a reason); only "cannot tell" is an error.
func (s *Service) Validate(ctx context.Context, req *keywardv1.ValidateRequest) (*keywardv1.ValidateResponse, error) {
	res, err := s.verifier.Verify(ctx, validate.Request{
		Secret:         req.GetKey(),
		RequiredScopes: req.GetRequiredScopes(),
		Environment:    req.GetEnvironment(),
	})
	if err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	out := &keywardv1.ValidateResponse{Valid: res.Valid, Reason: reasons[res.Reason]}
	if res.Valid {
		// The key may be a shared cached snapshot: render it once, reuse the
		// message (gRPC only reads it while marshalling).
		out.Key = res.Key.View(func(k *keys.Key) any { return toProto(k) }).(*keywardv1.Key)
	}
	return out, nil
}
