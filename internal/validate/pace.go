package validate

import (
	"context"
	"time"
)

// Pacer holds a refusal until a fixed time after its request arrived
// (abuse.Floor), so that the refusals it holds take the same time whatever
// path produced them: an unknown key, read from the store, and a disabled
// one, found in the in-process cache, answer alike.
type Pacer interface {
	// Hold returns once the request that started at start may be answered,
	// or when ctx ends. start carries a monotonic clock reading.
	Hold(ctx context.Context, start time.Time)
}

// held reports whether a refusal with reason r is paced: a refusal of the
// key itself, whose reasons --auth-strict reports alike (unknown, disabled,
// deleted, expired, and an address outside the key's allow-list). Malformed
// keys are not, since the caller can tell one without asking; refusals of
// an active key (scope, environment, rate limit, quota) are not, since they
// tell its holder nothing new; and valid keys never are.
func held(r Reason) bool {
	switch r {
	case ReasonNotFound, ReasonDisabled, ReasonExpired, ReasonIPNotAllowed:
		return true
	}
	return false
}

func (v *Verifier) hold(ctx context.Context, start time.Time) {
	if v.pacer != nil {
		v.pacer.Hold(ctx, start)
	}
}
