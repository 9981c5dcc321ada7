package validate

import "strconv"

// Entry names the entry point a secret was presented at. Observers label
// verdicts with it; the verdict itself never depends on it.
type Entry uint8

const (
	// EntryValidate is keyward.v1 Validate, over gRPC or REST (the gateway
	// calls the gRPC method). It is the zero value.
	EntryValidate Entry = iota
	// EntryCheck is Envoy's envoy.service.auth.v3.Authorization/Check.
	EntryCheck
	// EntryForwardAuth is the HTTP forward-auth endpoint /v1/auth.
	EntryForwardAuth
	// NumEntries counts the entries above, for tables indexed by Entry.
	NumEntries
)

// String is the entry's name in metric labels.
func (e Entry) String() string {
	switch e {
	case EntryValidate:
		return "validate"
	case EntryCheck:
		return "envoy_check"
	case EntryForwardAuth:
		return "forward_auth"
	}
	return "entry_" + strconv.Itoa(int(e))
}

// String is the reason's name in metric labels: keyward.v1's REASON_… name
// in lower case without the prefix.
func (r Reason) String() string {
	switch r {
	case ReasonValid:
		return "valid"
	case ReasonNotFound:
		return "not_found"
	case ReasonMalformed:
		return "malformed"
	case ReasonDisabled:
		return "disabled"
	case ReasonExpired:
		return "expired"
	case ReasonInsufficientScope:
		return "insufficient_scope"
	case ReasonWrongEnvironment:
		return "wrong_environment"
	case ReasonIPNotAllowed:
		return "ip_not_allowed"
	case ReasonRateLimited:
		return "rate_limited"
	case ReasonUsageExceeded:
		return "usage_exceeded"
	}
	return "reason_" + strconv.Itoa(int(r))
}

// Observer learns every verdict, for metrics: the entry point, the reason,
// and the error when the verifier could not tell (then r is zero). It is
// called on the hot path, so it must be cheap and safe for concurrent use,
// and it is never given the secret.
type Observer interface {
	Verdict(e Entry, r Reason, err error)
}

// Observe makes the Verifier report every verdict to o. Call it once,
// before the Verifier is used.
func (v *Verifier) Observe(o Observer) { v.obs = o }
