package keyservice

import (
	"context"
	"errors"
	"fmt"
	"time"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/ratelimit"
	"github.com/keyward/keyward/internal/sealer"
)

// RateLimiter counts a request against a limit (the limiters of
// internal/ratelimit do); ids here are "reveal:…", never key ids.
type RateLimiter interface {
	Allow(ctx context.Context, id string, rl keys.RateLimit) (ratelimit.Decision, error)
}

// Reveals are limited per admin and across all of them, so that a stolen
// admin credential cannot read every secret at once: 10 a minute each, 60 a
// minute in all.
var (
	revealPerActor = keys.RateLimit{Limit: 10, Period: time.Minute, Burst: 10}
	revealOverall  = keys.RateLimit{Limit: 60, Period: time.Minute, Burst: 60}
)

// RevealKey returns the secret of a recoverable key, and records who asked.
func (s *Service) RevealKey(ctx context.Context, req *keywardv1.RevealKeyRequest) (*keywardv1.RevealKeyResponse, error) {
	id := req.GetKeyId()
	if err := checkID(id); err != nil {
		return nil, err
	}
	if s.sealer == nil {
		return nil, errNoMasterKey
	}
	a := s.audit(ctx, audit.ActionReveal)
	if err := s.allowReveal(ctx, a.Actor); err != nil {
		return nil, err
	}
	k, err := s.store.Get(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("reveal key %s: %w", id, err)
	}
	if len(k.Sealed) == 0 {
		return nil, keys.FailedPrecondition("key %s is not recoverable: its secret was shown only when it was created or last regenerated; "+
			"regenerate it to get a new one", id)
	}
	plain, err := s.sealer.Open(k.ID, k.Sealed)
	switch {
	case errors.Is(err, sealer.ErrUnknownKey):
		return nil, keys.FailedPrecondition("key %s: its secret is %v; give the server that master key as a previous one "+
			"(KEYWARD_PREVIOUS_MASTER_KEYS) and run keyward rotate-master-key", id, err)
	case err != nil:
		return nil, fmt.Errorf("reveal key %s: %w", id, err) // tampered: Internal, logged
	}
	defer clear(plain)
	// No record, no reveal: the event is written before the secret leaves.
	a.KeyID = k.ID
	if err := s.store.AppendAudit(ctx, a); err != nil {
		return nil, fmt.Errorf("reveal key %s: record the reveal: %w", id, err)
	}
	s.log.InfoContext(ctx, "key revealed", "key_id", k.ID, "actor", a.Actor)
	return &keywardv1.RevealKeyResponse{Key: s.toProto(k), Secret: string(plain)}, nil
}

// allowReveal counts one reveal by actor against both limits.
func (s *Service) allowReveal(ctx context.Context, actor string) error {
	for _, l := range []struct {
		id string
		rl keys.RateLimit
	}{{"reveal:actor:" + actor, revealPerActor}, {"reveal:all", revealOverall}} {
		d, err := s.reveals.Allow(ctx, l.id, l.rl)
		if err != nil {
			return fmt.Errorf("reveal rate limit: %w", err)
		}
		if !d.Allowed {
			return &keys.RetryLaterError{What: "reveals", RetryAfter: d.RetryAfter}
		}
	}
	return nil
}
