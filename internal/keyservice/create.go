package keyservice

import (
	"context"
	"fmt"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/keymat"
	"github.com/keyward/keyward/internal/keys"
)

// CreateKey issues a new key; the response is the only place its secret appears.
func (s *Service) CreateKey(ctx context.Context, req *keywardv1.CreateKeyRequest) (*keywardv1.CreateKeyResponse, error) {
	in := req.GetKey()
	if in == nil {
		return nil, keys.Invalid("key", "required")
	}
	if len(req.GetRequestId()) > maxRequestIDLen {
		return nil, keys.Invalid("request_id", "longer than %d characters", maxRequestIDLen)
	}
	now := s.now()
	k := &keys.Key{
		Name:        in.GetDisplayName(),
		Description: in.GetDescription(),
		Environment: in.GetEnvironment(),
		State:       keys.StateActive,
		Metadata:    in.GetMetadata(),
	}
	if k.Environment == "" {
		k.Environment = "live"
	}
	if !s.envs[k.Environment] {
		return nil, keys.Invalid("environment", "%q is not one of the configured environments %v", truncate(k.Environment), s.envNames())
	}
	var err error
	if err = checkText("display_name", k.Name, true, maxNameLen); err != nil {
		return nil, err
	}
	if err = checkText("description", k.Description, false, maxDescriptionLen); err != nil {
		return nil, err
	}
	if k.Scopes, err = normScopes(in.GetScopes()); err != nil {
		return nil, err
	}
	if err = checkMetadata(k.Metadata); err != nil {
		return nil, err
	}
	if k.ExpireTime, _, err = expiry(in.GetExpireTime(), in.GetTtl(), now); err != nil {
		return nil, err
	}
	if k.AllowedCIDRs, err = parseCIDRs(in.GetAllowedCidrs()); err != nil {
		return nil, err
	}
	if k.RateLimit, err = parseRateLimit(in.GetRateLimit()); err != nil {
		return nil, err
	}
	if k.Quota, err = parseQuota(in.GetQuota()); err != nil {
		return nil, err
	}
	if in.GetRecoverable() && s.sealer == nil {
		return nil, errNoMasterKey
	}
	if k.ID, err = keys.NewID(now); err != nil {
		return nil, err
	}
	secret, err := keymat.Generate(k.Environment)
	if err != nil {
		return nil, fmt.Errorf("generate secret: %w", err)
	}
	setSecret(k, secret)
	if in.GetRecoverable() {
		if k.Sealed, err = s.sealSecret(k.ID, secret); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	var created *keys.Key
	// No cache can know a hash that has never existed, but going through the
	// coordinator keeps a single path for every write.
	err = s.caches.Write(ctx, [][]byte{k.Hash}, func(ctx context.Context) ([]keys.Change, error) {
		c, err := s.store.Create(ctx, k, req.GetRequestId(), s.audit(ctx, audit.ActionCreate))
		if err != nil {
			return nil, err
		}
		created = c
		return []keys.Change{{Hash: c.Hash, Key: c, Version: c.Version}}, nil
	})
	if err != nil {
		return nil, fmt.Errorf("create key: %w", err)
	}
	s.log.InfoContext(ctx, "key created", "key_id", created.ID, "environment", created.Environment, "recoverable", len(created.Sealed) > 0)
	return &keywardv1.CreateKeyResponse{Key: s.toProto(created), Secret: secret.String()}, nil
}

func setSecret(k *keys.Key, s keymat.Secret) {
	k.Hash, k.Start, k.Last4 = s.Hash(), s.Start(), s.Last4()
}

func (s *Service) envNames() []string {
	out := make([]string, 0, len(s.envs))
	for e := range s.envs {
		out = append(out, e)
	}
	return out
}
