package keyservice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/ratelimit"
	"github.com/keyward/keyward/internal/sealer"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/validate"
)

// Coordinator runs every write so that no cache can serve the state it
// replaces: see cache.Cache.Write. hashes are the secrets' hashes whose
// answer the write may change; commit performs the store write and reports
// what those hashes resolve to afterwards.
type Coordinator interface {
	Write(ctx context.Context, hashes [][]byte, commit func(context.Context) ([]keys.Change, error)) error
}

// Options configures a Service.
type Options struct {
	Store    store.Store
	Verifier *validate.Verifier
	Caches   Coordinator
	// Environments a key may be created in; empty means "live" and "test".
	Environments []string
	Logger       *slog.Logger
	Now          func() time.Time
	// Sealer encrypts recoverable keys' secrets; nil: no master key, and
	// recoverable keys are refused (recoverable.go).
	Sealer *sealer.Sealer
	// RevealLimiter counts RevealKey calls (reveal.go); nil: in process.
	RevealLimiter RateLimiter
}

// Service implements keywardv1.KeyServiceServer.
type Service struct {
	keywardv1.UnimplementedKeyServiceServer
	store    store.Store
	verifier *validate.Verifier
	caches   Coordinator
	envs     map[string]bool
	log      *slog.Logger
	now      func() time.Time
	sealer   *sealer.Sealer
	reveals  RateLimiter
}

var _ keywardv1.KeyServiceServer = (*Service)(nil)

// New returns a Service.
func New(o Options) *Service {
	s := &Service{store: o.Store, verifier: o.Verifier, caches: o.Caches, log: o.Logger, now: o.Now, envs: map[string]bool{},
		sealer: o.Sealer, reveals: o.RevealLimiter}
	if s.reveals == nil {
		s.reveals = ratelimit.NewLocal(1024)
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	if len(o.Environments) == 0 {
		o.Environments = []string{"live", "test"}
	}
	for _, e := range o.Environments {
		s.envs[e] = true
	}
	return s
}

// writeTimeout bounds a write, so a hung store cannot hold cache markers
// (and the caller) indefinitely.
const writeTimeout = 30 * time.Second

// errHashMoved: the key's secret changed between reading it and writing it
// (a concurrent regenerate); the write is retried with the new hash.
var errHashMoved = errors.New("secret changed concurrently")

// audit describes the audit event of a write: action, by the actor the
// transport put in ctx.
func (s *Service) audit(ctx context.Context, action string) store.Audit {
	actor := audit.ActorFrom(ctx)
	return store.Audit{Actor: actor.KeyID, Source: actor.Source, Action: action}
}

// leakAudit describes the audit event of a leak report, saying why in
// detail.
func (s *Service) leakAudit(ctx context.Context, detail string) store.Audit {
	a := s.audit(ctx, audit.ActionLeakReported)
	a.Detail = detail
	return a
}

// update runs fn on key id in one store transaction, coordinated with the
// caches, recording action in the audit trail.
func (s *Service) update(ctx context.Context, id, action string, fn func(*keys.Key) error) (*keys.Key, error) {
	return s.updateAudited(ctx, id, s.audit(ctx, action), fn)
}

// updateAudited is update with the audit event given whole.
func (s *Service) updateAudited(ctx context.Context, id string, a store.Audit, fn func(*keys.Key) error) (*keys.Key, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		cur, err := s.store.Get(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("update key %s: %w", id, err)
		}
		var after *keys.Key
		err = s.caches.Write(ctx, secretsOf(cur), func(ctx context.Context) ([]keys.Change, error) {
			before, written, err := s.store.Update(ctx, id, func(k *keys.Key) error {
				if !sameSecrets(k, cur) {
					return errHashMoved
				}
				return fn(k)
			}, a)
			if err != nil {
				return nil, err
			}
			after = written
			return changesFor(before, written, written.Version), nil
		})
		switch {
		case errors.Is(err, errHashMoved) && attempt < 3:
			continue
		case errors.Is(err, errHashMoved):
			return nil, fmt.Errorf("update key %s: %w", id, keys.ErrConflict)
		case err != nil:
			return nil, err // the store's errors name the key already
		}
		return after, nil
	}
}

// checkEtag returns a function failing with ErrConflict unless etag is empty
// or matches the stored row.
func checkEtag(etag string) func(*keys.Key) error {
	return func(k *keys.Key) error {
		if etag != "" && etag != k.Etag() {
			return keys.ErrConflict
		}
		return nil
	}
}
