package main

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Exit codes of `keyward keys`, documented in keysUsage: scripts branch on
// them, so they never change meaning.
const (
	exitFailure      = 1
	exitUsage        = 2
	exitRefused      = 3
	exitNotFound     = 4
	exitConflict     = 5
	exitUnauthorized = 6
	exitUnavailable  = 7 // and any other "retry later"
)

// exitError is an error with the exit code the process should end with.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// exitCode is the process exit code for err returned by a command: the code
// an exitError carries, 1 for any other error.
func exitCode(err error) int {
	var e *exitError
	if errors.As(err, &e) {
		return e.code
	}
	return exitFailure
}

func usageError(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// rpcError names the failed operation and the gRPC code (what a person
// searches for), and picks the exit code from the code. ResourceExhausted is
// "retry later" only when the server says how long to wait (RetryInfo, e.g.
// too many reveals); without a delay it is a limit that waiting does not
// lift, such as a message over gRPC's size limit.
func rpcError(op string, err error) error {
	st := status.Convert(err)
	code := codeExit(st.Code())
	msg := fmt.Sprintf("%s: %s: %s", op, st.Code(), st.Message())
	if st.Code() == codes.ResourceExhausted {
		if d, ok := retryDelay(st); ok {
			msg += fmt.Sprintf(" (retry in %s)", d)
		} else {
			code = exitFailure
		}
	}
	return &exitError{code: code, err: errors.New(msg)}
}

// retryDelay is the RetryInfo detail of st, if it has one.
func retryDelay(st *status.Status) (time.Duration, bool) {
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			return ri.GetRetryDelay().AsDuration().Round(time.Millisecond), true
		}
	}
	return 0, false
}

func codeExit(c codes.Code) int {
	switch c {
	case codes.InvalidArgument, codes.OutOfRange:
		return exitUsage
	case codes.NotFound:
		return exitNotFound
	case codes.Aborted, codes.FailedPrecondition, codes.AlreadyExists:
		return exitConflict
	case codes.Unauthenticated, codes.PermissionDenied:
		return exitUnauthorized
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted:
		return exitUnavailable
	}
	return exitFailure
}
