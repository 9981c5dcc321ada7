package keys

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel errors of the domain. The transport maps them to status codes in
// exactly one place (internal/server/errors.go). None of them, nor any error
// wrapping them, may contain key material.
var (
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
	// ErrConflict: the caller's etag no longer matches the stored version.
	ErrConflict = errors.New("etag mismatch: the key changed since it was read")
	// ErrUnavailable: a dependency (the store) cannot be reached; nothing was written.
	ErrUnavailable      = errors.New("store unavailable")
	ErrUnauthenticated  = errors.New("missing or invalid admin credential")
	ErrPermissionDenied = errors.New("credential lacks the keyward:admin scope")
	// ErrQuotaExceeded: the key has used every use its quota allows in the
	// current period; nothing was counted.
	ErrQuotaExceeded = errors.New("quota exceeded")
	// ErrFailedPrecondition: the request is valid but the system is not in
	// a state to perform it (e.g. a recoverable key without a master key).
	// Wrap it with a message saying what to change.
	ErrFailedPrecondition = errors.New("failed precondition")
)

// FailedPrecondition returns an error wrapping ErrFailedPrecondition whose
// message is the reason alone: say what the caller (or the operator) must
// change.
func FailedPrecondition(format string, args ...any) error {
	return &preconditionError{reason: fmt.Sprintf(format, args...)}
}

type preconditionError struct{ reason string }

func (e *preconditionError) Error() string { return e.reason }
func (e *preconditionError) Unwrap() error { return ErrFailedPrecondition }

// RetryLaterError refuses a request over a limit; the caller may retry after
// RetryAfter.
type RetryLaterError struct {
	What       string // what is limited, e.g. "reveals"
	RetryAfter time.Duration
}

func (e *RetryLaterError) Error() string {
	return fmt.Sprintf("too many %s; retry in %v", e.What, (e.RetryAfter + time.Second - 1).Truncate(time.Second))
}

// InvalidArgumentError says which input field is wrong and why.
type InvalidArgumentError struct {
	Field  string
	Reason string
}

func (e *InvalidArgumentError) Error() string {
	return fmt.Sprintf("invalid %s: %s", e.Field, e.Reason)
}

// Invalid builds an InvalidArgumentError.
func Invalid(field, format string, args ...any) error {
	return &InvalidArgumentError{Field: field, Reason: fmt.Sprintf(format, args...)}
}
