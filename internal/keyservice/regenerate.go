package keyservice

import (
	"context"
	"fmt"
	"time"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/keymat"
	"github.com/keyward/keyward/internal/keys"
)

// RegenerateKey replaces the secret; once it returns, the old one is refused.
func (s *Service) RegenerateKey(ctx context.Context, req *keywardv1.RegenerateKeyRequest) (*keywardv1.RegenerateKeyResponse, error) {
	grace, err := gracePeriod(req.GetGracePeriod())
	if err != nil {
		return nil, err
	}
	var secret keymat.Secret
	k, err := s.update(ctx, req.GetKeyId(), audit.ActionRegenerate, func(k *keys.Key) error {
		if err := checkEtag(req.GetEtag())(k); err != nil {
			return err
		}
		var err error
		if secret, err = keymat.Generate(k.Environment); err != nil {
			return fmt.Errorf("generate secret: %w", err)
		}
		// The secret being replaced survives for the grace period (if any);
		// one replaced earlier ends now.
		k.ClearPrevious()
		if grace > 0 {
			if k.State != keys.StateActive {
				return keys.Invalid("grace_period", "the key is disabled: a grace period would have nothing to keep working")
			}
			k.PrevHash, k.PrevStart, k.PrevLast4 = k.Hash, k.Start, k.Last4
			k.PrevExpire = s.now().Add(grace).UTC().Truncate(time.Microsecond)
		}
		setSecret(k, secret)
		// A recoverable key keeps only its new secret sealed; the replaced
		// one, even in a grace period, can no longer be revealed.
		if len(k.Sealed) > 0 {
			if k.Sealed, err = s.sealSecret(k.ID, secret); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "key regenerated", "key_id", k.ID, "grace_period", grace)
	return &keywardv1.RegenerateKeyResponse{Key: s.toProto(k), Secret: secret.String()}, nil
}
