package keyservice

import (
	"context"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
)

// GetKey returns one key, never its secret.
func (s *Service) GetKey(ctx context.Context, req *keywardv1.GetKeyRequest) (*keywardv1.GetKeyResponse, error) {
	if err := checkID(req.GetKeyId()); err != nil {
		return nil, err
	}
	k, err := s.store.Get(ctx, req.GetKeyId())
	if err != nil {
		return nil, err // the store names the key
	}
	return &keywardv1.GetKeyResponse{Key: s.toProto(k)}, nil
}
