// Package adminauth decides whether a bearer token is an admin credential,
// and bootstraps the first admin key on a new store. Admin keys are ordinary
// Keyward keys carrying the scope keyward:admin, so they can be listed,
// disabled and regenerated like any other.
package adminauth

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"time"

	"github.com/keyward/keyward/internal/keymat"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/validate"
)

// Scope marks admin keys.
const Scope = "keyward:admin"

// Authenticator checks admin credentials.
type Authenticator struct {
	lookup validate.Lookup
	now    func() time.Time
}

// New returns an Authenticator that finds keys through lookup.
func New(lookup validate.Lookup, now func() time.Time) *Authenticator {
	if now == nil {
		now = time.Now
	}
	return &Authenticator{lookup: lookup, now: now}
}

// Authenticate returns the admin key for token, keys.ErrUnauthenticated when
// the token is no usable key, keys.ErrPermissionDenied when the key is not an
// admin key. The token need not be in Keyward's format: an operator may set
// any long random string as KEYWARD_ADMIN_KEY.
func (a *Authenticator) Authenticate(ctx context.Context, token string) (*keys.Key, error) {
	if token == "" {
		return nil, keys.ErrUnauthenticated
	}
	hash := keymat.Sum(token)
	k, err := a.lookup.ByHash(ctx, hash)
	switch {
	case errors.Is(err, keys.ErrNotFound):
		return nil, keys.ErrUnauthenticated
	case err != nil:
		return nil, fmt.Errorf("authenticate: %w", err)
	// The index lookup already matched the hash; comparing again in constant
	// time keeps that guarantee independent of how a lookup is implemented.
	case subtle.ConstantTimeCompare(k.Hash, hash[:]) != 1 &&
		// or the secret a rotation replaced, during its grace period
		(subtle.ConstantTimeCompare(k.PrevHash, hash[:]) != 1 || !k.HasPrevious(a.now())),
		k.State != keys.StateActive,
		k.Expired(a.now()):
		return nil, keys.ErrUnauthenticated
	case !k.HasScope(Scope):
		return nil, keys.ErrPermissionDenied
	}
	return k, nil
}
