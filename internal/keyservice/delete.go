package keyservice

import (
	"context"
	"fmt"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/keys"
)

// DeleteKey removes a key; once it returns, its secret is refused.
func (s *Service) DeleteKey(ctx context.Context, req *keywardv1.DeleteKeyRequest) (*keywardv1.DeleteKeyResponse, error) {
	if err := checkID(req.GetKeyId()); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	cur, err := s.store.Get(ctx, req.GetKeyId())
	if err != nil {
		return nil, fmt.Errorf("delete key %s: %w", req.GetKeyId(), err)
	}
	var deleted *keys.Key
	err = s.caches.Write(ctx, secretsOf(cur), func(ctx context.Context) ([]keys.Change, error) {
		d, err := s.store.Delete(ctx, req.GetKeyId(), func(k *keys.Key) error {
			if !sameSecrets(k, cur) {
				// Regenerated since we looked: the new hash was not made
				// uncacheable, so refuse; the caller retries.
				return keys.ErrConflict
			}
			return checkEtag(req.GetEtag())(k)
		}, s.audit(ctx, audit.ActionDelete))
		if err != nil {
			return nil, err
		}
		deleted = d
		return changesFor(d, nil, d.Version+1), nil
	})
	if err != nil {
		return nil, fmt.Errorf("delete key %s: %w", req.GetKeyId(), err)
	}
	s.log.InfoContext(ctx, "key deleted", "key_id", deleted.ID)
	return &keywardv1.DeleteKeyResponse{}, nil
}
