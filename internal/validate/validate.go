// Package validate is the one verifier behind gRPC Validate, Envoy Check and
// forward-auth: parse and checksum, hash, look up, then judge. Keeping it in
// one place means every entry point refuses exactly the same keys.
package validate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keyward/keyward/internal/keymat"
	"github.com/keyward/keyward/internal/keys"
)

// Reason says why a key was accepted or refused.
type Reason int

const (
	ReasonValid Reason = iota + 1
	ReasonNotFound
	ReasonMalformed
	ReasonDisabled
	ReasonExpired
	ReasonInsufficientScope
	ReasonWrongEnvironment
)

// Lookup finds a key by the SHA-256 of its secret. It returns an error
// wrapping keys.ErrNotFound for an unknown hash; any other error means the
// answer is unknown and the verifier fails closed.
type Lookup interface {
	ByHash(ctx context.Context, hash [32]byte) (*keys.Key, error)
}

// Request is what a caller presents.
type Request struct {
	Secret         string
	RequiredScopes []string
	Environment    string
}

// Result is the verdict. Key is set only when Valid.
type Result struct {
	Valid  bool
	Reason Reason
	Key    *keys.Key
}

// Verifier judges presented secrets.
type Verifier struct {
	lookup Lookup
	now    func() time.Time
}

// New returns a Verifier reading keys through lookup. now may be nil for time.Now.
func New(lookup Lookup, now func() time.Time) *Verifier {
	if now == nil {
		now = time.Now
	}
	return &Verifier{lookup: lookup, now: now}
}

// Verify answers whether req's secret may be used. A refusal is a Result, not
// an error; the error is reserved for "cannot tell" (the store is down), and
// the caller must then refuse.
func (v *Verifier) Verify(ctx context.Context, req Request) (Result, error) {
	secret, err := keymat.Parse(req.Secret)
	if err != nil {
		return Result{Reason: ReasonMalformed}, nil
	}
	k, err := v.lookup.ByHash(ctx, secret.Sum())
	if errors.Is(err, keys.ErrNotFound) {
		return Result{Reason: ReasonNotFound}, nil
	}
	if err != nil {
		return Result{}, fmt.Errorf("look up key: %w", err)
	}
	reason := judge(k, req, v.now())
	if reason != ReasonValid {
		// A refusal never carries the key: it must not reveal whose secret it was.
		return Result{Reason: reason}, nil
	}
	return Result{Valid: true, Reason: reason, Key: k}, nil
}

func judge(k *keys.Key, req Request, now time.Time) Reason {
	switch {
	case k.State != keys.StateActive:
		return ReasonDisabled
	case k.Expired(now):
		return ReasonExpired
	case req.Environment != "" && req.Environment != k.Environment:
		return ReasonWrongEnvironment
	}
	for _, s := range req.RequiredScopes {
		if !k.HasScope(s) {
			return ReasonInsufficientScope
		}
	}
	return ReasonValid
}
