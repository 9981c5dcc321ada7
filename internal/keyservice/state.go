package keyservice

import (
	"context"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/keys"
)

// EnableKey lets a disabled key validate again.
func (s *Service) EnableKey(ctx context.Context, req *keywardv1.EnableKeyRequest) (*keywardv1.EnableKeyResponse, error) {
	k, err := s.setState(ctx, req.GetKeyId(), req.GetEtag(), keys.StateActive)
	if err != nil {
		return nil, err
	}
	return &keywardv1.EnableKeyResponse{Key: s.toProto(k)}, nil
}

// DisableKey blocks a key; once it returns, no validation accepts it.
func (s *Service) DisableKey(ctx context.Context, req *keywardv1.DisableKeyRequest) (*keywardv1.DisableKeyResponse, error) {
	k, err := s.setState(ctx, req.GetKeyId(), req.GetEtag(), keys.StateDisabled)
	if err != nil {
		return nil, err
	}
	return &keywardv1.DisableKeyResponse{Key: s.toProto(k)}, nil
}

// setState writes even when the state is unchanged: the call is then a cheap
// way to re-confirm propagation after an earlier attempt failed mid-way.
func (s *Service) setState(ctx context.Context, id, etag string, to keys.State) (*keys.Key, error) {
	action := audit.ActionEnable
	if to == keys.StateDisabled {
		action = audit.ActionDisable
	}
	return s.update(ctx, id, action, func(k *keys.Key) error {
		if err := checkEtag(etag)(k); err != nil {
			return err
		}
		k.State = to
		if to == keys.StateDisabled {
			// Disabling ends a rotation's grace period: enabling again must
			// not bring the replaced secret back.
			k.ClearPrevious()
		}
		return nil
	})
}
