package keyservice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/validate"
)

// ChangeNotifier learns of every committed write before the RPC returns, so
// that no validation starting afterwards can see the old state. before is nil
// for a create, after is nil for a delete. An error means the change is
// committed but its propagation is not confirmed; the RPC then fails so the
// caller retries (every write here is safe to retry).
type ChangeNotifier interface {
	KeyChanged(ctx context.Context, before, after *keys.Key) error
}

// Options configures a Service.
type Options struct {
	Store    store.Store
	Verifier *validate.Verifier
	// Notifier may be nil when nothing caches keys.
	Notifier ChangeNotifier
	// Environments a key may be created in; empty means "live" and "test".
	Environments []string
	Logger       *slog.Logger
	Now          func() time.Time
}

// Service implements keywardv1.KeyServiceServer.
type Service struct {
	keywardv1.UnimplementedKeyServiceServer
	store    store.Store
	verifier *validate.Verifier
	notifier ChangeNotifier
	envs     map[string]bool
	log      *slog.Logger
	now      func() time.Time
}

var _ keywardv1.KeyServiceServer = (*Service)(nil)

// New returns a Service.
func New(o Options) *Service {
	s := &Service{store: o.Store, verifier: o.Verifier, notifier: o.Notifier, log: o.Logger, now: o.Now, envs: map[string]bool{}}
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

// afterWrite is the single home of cache invalidation: every successful
// write calls it before its RPC returns.
func (s *Service) afterWrite(ctx context.Context, before, after *keys.Key) error {
	if s.notifier == nil {
		return nil
	}
	if err := s.notifier.KeyChanged(ctx, before, after); err != nil {
		return fmt.Errorf("propagate change (the write is committed; retry to confirm): %w", errors.Join(keys.ErrUnavailable, err))
	}
	return nil
}

// update runs fn on key id in one store transaction, then afterWrite.
func (s *Service) update(ctx context.Context, id string, fn func(*keys.Key) error) (*keys.Key, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	before, after, err := s.store.Update(ctx, id, fn)
	if err != nil {
		return nil, fmt.Errorf("update key %s: %w", id, err)
	}
	if err := s.afterWrite(ctx, before, after); err != nil {
		return nil, err
	}
	return after, nil
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
