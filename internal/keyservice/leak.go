package keyservice

import (
	"context"
	"errors"
	"fmt"
	"strings"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/keymat"
	"github.com/keyward/keyward/internal/keys"
)

// errLeakNotFound answers a secret that no key has, never repeating it.
var errLeakNotFound = fmt.Errorf("no key has this secret (it may be mistyped, or its key deleted): %w", keys.ErrNotFound)

// ReportLeakedKey disables or regenerates the key of a leaked secret (or of a
// key id), recording why in the audit trail. Once it returns, the leaked
// secret is refused everywhere.
func (s *Service) ReportLeakedKey(ctx context.Context, req *keywardv1.ReportLeakedKeyRequest) (*keywardv1.ReportLeakedKeyResponse, error) {
	var verb string
	switch req.GetAction() {
	case keywardv1.ReportLeakedKeyRequest_ACTION_DISABLE:
		verb = "disable"
	case keywardv1.ReportLeakedKeyRequest_ACTION_REGENERATE:
		verb = "regenerate"
	default:
		return nil, keys.Invalid("action", "required: ACTION_DISABLE or ACTION_REGENERATE")
	}
	if err := checkText("reason", req.GetReason(), false, maxDescriptionLen); err != nil {
		return nil, err
	}
	id, err := s.leakedKeyID(ctx, req)
	if err != nil {
		return nil, err
	}
	a := s.leakAudit(ctx, verb+": "+maskSecrets(req.GetReason()))
	if verb == "disable" {
		k, err := s.updateAudited(ctx, id, a, func(k *keys.Key) error {
			k.State = keys.StateDisabled
			k.ClearPrevious() // a secret in its grace period stops too
			return nil
		})
		if err != nil {
			return nil, err
		}
		s.log.WarnContext(ctx, "leaked key disabled", "key_id", k.ID)
		return &keywardv1.ReportLeakedKeyResponse{Key: s.toProto(k)}, nil
	}
	var secret keymat.Secret
	k, err := s.updateAudited(ctx, id, a, func(k *keys.Key) error {
		var err error
		if secret, err = keymat.Generate(k.Environment); err != nil {
			return fmt.Errorf("generate secret: %w", err)
		}
		k.ClearPrevious() // no grace period: the leaked secret stops now
		setSecret(k, secret)
		if len(k.Sealed) > 0 {
			// The sealed copy is the leaked secret: it must go either way.
			k.Sealed = nil
			if s.sealer != nil {
				if k.Sealed, err = s.sealSecret(k.ID, secret); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.log.WarnContext(ctx, "leaked key regenerated", "key_id", k.ID, "recoverable", len(k.Sealed) > 0)
	return &keywardv1.ReportLeakedKeyResponse{Key: s.toProto(k), Secret: secret.String()}, nil
}

// leakedKeyID finds the key a report names: by the secret's hash (which
// also matches a previous secret still kept for a rotation's grace period),
// or by id.
func (s *Service) leakedKeyID(ctx context.Context, req *keywardv1.ReportLeakedKeyRequest) (string, error) {
	switch t := req.GetTarget().(type) {
	case *keywardv1.ReportLeakedKeyRequest_KeyId:
		return t.KeyId, checkID(t.KeyId)
	case *keywardv1.ReportLeakedKeyRequest_Secret:
		secret, err := keymat.Parse(t.Secret)
		if err != nil {
			return "", errLeakNotFound // malformed: no key can have it
		}
		k, err := s.store.GetByHash(ctx, secret.Hash())
		if err != nil {
			if errors.Is(err, keys.ErrNotFound) {
				return "", errLeakNotFound
			}
			return "", fmt.Errorf("find the leaked key: %w", err)
		}
		return k.ID, nil
	}
	return "", keys.Invalid("target", "required: the leaked secret, or the key_id")
}

// maskSecrets replaces anything in text that looks like a Keyward secret by
// its masked form, so a reason that quotes the leak does not put a working
// secret into the audit trail.
func maskSecrets(text string) string {
	return keymat.Pattern.ReplaceAllStringFunc(text, func(m string) string {
		visible := strings.LastIndexByte(m, '_') + 1 + 6 // as much as a masked key shows
		return m[:visible] + "…" + m[len(m)-4:]
	})
}
