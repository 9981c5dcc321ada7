package keyservice

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/validate"
)

func toProto(k *keys.Key) *keywardv1.Key {
	state := keywardv1.Key_STATE_ACTIVE
	if k.State == keys.StateDisabled {
		state = keywardv1.Key_STATE_DISABLED
	}
	return &keywardv1.Key{
		KeyId:        k.ID,
		DisplayName:  k.Name,
		Description:  k.Description,
		Environment:  k.Environment,
		State:        state,
		MaskedKey:    k.Masked(),
		Scopes:       k.Scopes,
		Metadata:     k.Metadata,
		CreateTime:   timestamp(k.CreateTime),
		UpdateTime:   timestamp(k.UpdateTime),
		ExpireTime:   timestamp(k.ExpireTime),
		LastUsedTime: timestamp(k.LastUsed),
		Etag:         k.Etag(),
	}
}

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

var reasons = map[validate.Reason]keywardv1.ValidateResponse_Reason{
	validate.ReasonValid:             keywardv1.ValidateResponse_REASON_VALID,
	validate.ReasonNotFound:          keywardv1.ValidateResponse_REASON_NOT_FOUND,
	validate.ReasonMalformed:         keywardv1.ValidateResponse_REASON_MALFORMED,
	validate.ReasonDisabled:          keywardv1.ValidateResponse_REASON_DISABLED,
	validate.ReasonExpired:           keywardv1.ValidateResponse_REASON_EXPIRED,
	validate.ReasonInsufficientScope: keywardv1.ValidateResponse_REASON_INSUFFICIENT_SCOPE,
	validate.ReasonWrongEnvironment:  keywardv1.ValidateResponse_REASON_WRONG_ENVIRONMENT,
}
