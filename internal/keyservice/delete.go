package keyservice

import (
	"context"
	"fmt"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
)

// DeleteKey removes a key; once it returns, its secret is refused.
func (s *Service) DeleteKey(ctx context.Context, req *keywardv1.DeleteKeyRequest) (*keywardv1.DeleteKeyResponse, error) {
	if err := checkID(req.GetKeyId()); err != nil {
		return nil, err
	}
	deleted, err := s.store.Delete(ctx, req.GetKeyId(), checkEtag(req.GetEtag()))
	if err != nil {
		return nil, fmt.Errorf("delete key %s: %w", req.GetKeyId(), err)
	}
	if err := s.afterWrite(ctx, deleted, nil); err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "key deleted", "key_id", deleted.ID)
	return &keywardv1.DeleteKeyResponse{}, nil
}
