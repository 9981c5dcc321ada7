package server

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/keyward/keyward/internal/keymat"
	"github.com/keyward/keyward/internal/keys"
)

// toStatus is the only place domain errors become gRPC status codes (and,
// through the gateway, HTTP statuses). Messages of unexpected errors are not
// passed on: they may carry driver details; they are logged instead. Every
// message passed on is redacted (keymat.Redact): messages quote what the
// client sent, an id or a field's value, and a secret pasted where it does
// not belong must not come back in an error, nor in the traces and client
// logs that record errors.
func toStatus(ctx context.Context, log *slog.Logger, method string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return redactStatus(err) // already a status, e.g. from grpc itself
	}
	var invalid *keys.InvalidArgumentError
	var later *keys.RetryLaterError
	switch {
	case errors.As(err, &invalid):
		st := status.New(codes.InvalidArgument, keymat.Redact(invalid.Error()))
		if d, derr := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: invalid.Field, Description: keymat.Redact(invalid.Reason)},
		}}); derr == nil {
			st = d
		}
		return st.Err()
	case errors.Is(err, keys.ErrUnauthenticated):
		return status.Error(codes.Unauthenticated, keys.ErrUnauthenticated.Error())
	case errors.Is(err, keys.ErrPermissionDenied):
		return status.Error(codes.PermissionDenied, keys.ErrPermissionDenied.Error())
	case errors.Is(err, keys.ErrNotFound):
		return status.Error(codes.NotFound, keymat.Redact(err.Error()))
	case errors.Is(err, keys.ErrAlreadyExists):
		return status.Error(codes.AlreadyExists, keymat.Redact(err.Error()))
	case errors.Is(err, keys.ErrConflict):
		return status.Error(codes.Aborted, keymat.Redact(err.Error()))
	case errors.Is(err, keys.ErrFailedPrecondition):
		return status.Error(codes.FailedPrecondition, keymat.Redact(err.Error()))
	case errors.As(err, &later):
		st := status.New(codes.ResourceExhausted, keymat.Redact(later.Error()))
		if d, derr := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(later.RetryAfter)}); derr == nil {
			st = d
		}
		return st.Err()
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "request canceled")
	case errors.Is(err, keys.ErrUnavailable):
		log.WarnContext(ctx, "dependency unavailable", "method", method, "err", err)
		return status.Error(codes.Unavailable, "a dependency is unavailable; retry later (retrying is safe)")
	}
	log.ErrorContext(ctx, "internal error", "method", method, "err", err)
	return status.Error(codes.Internal, "internal error")
}

// redactStatus is the status err with its message redacted (keymat.Redact),
// its code and details kept; err itself if there was nothing to redact.
func redactStatus(err error) error {
	st := status.Convert(err)
	msg := keymat.Redact(st.Message())
	if msg == st.Message() {
		return err
	}
	p := st.Proto()
	p.Message = msg
	return status.FromProto(p).Err()
}
