package keys

import (
	"errors"
	"fmt"
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
)

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
