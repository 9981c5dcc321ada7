package keyservice

import (
	"context"
	"fmt"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/keymat"
	"github.com/keyward/keyward/internal/keys"
)

// RegenerateKey replaces the secret; once it returns, the old one is refused.
func (s *Service) RegenerateKey(ctx context.Context, req *keywardv1.RegenerateKeyRequest) (*keywardv1.RegenerateKeyResponse, error) {
	var secret keymat.Secret
	k, err := s.update(ctx, req.GetKeyId(), func(k *keys.Key) error {
		if err := checkEtag(req.GetEtag())(k); err != nil {
			return err
		}
		var err error
		if secret, err = keymat.Generate(k.Environment); err != nil {
			return fmt.Errorf("generate secret: %w", err)
		}
		setSecret(k, secret)
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "key regenerated", "key_id", k.ID)
	return &keywardv1.RegenerateKeyResponse{Key: toProto(k), Secret: secret.String()}, nil
}
