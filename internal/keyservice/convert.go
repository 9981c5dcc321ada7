package keyservice

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/validate"
)

func (s *Service) toProto(k *keys.Key) *keywardv1.Key { return toProto(k, s.now()) }

// toProto renders k as of now (which decides the quota's uses left and
// whether a rotation's replaced secret still shows).
func toProto(k *keys.Key, now time.Time) *keywardv1.Key {
	state := keywardv1.Key_STATE_ACTIVE
	if k.State == keys.StateDisabled {
		state = keywardv1.Key_STATE_DISABLED
	}
	out := &keywardv1.Key{
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
		AllowedCidrs: cidrStrings(k.AllowedCIDRs),
		RateLimit:    rateLimitProto(k.RateLimit),
		Quota:        quotaProto(k, now),
		Recoverable:  len(k.Sealed) > 0,
	}
	if k.HasPrevious(now) {
		out.PreviousMaskedKey = k.PrevMasked()
		out.PreviousKeyExpireTime = timestamp(k.PrevExpire)
	}
	return out
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
	validate.ReasonIPNotAllowed:      keywardv1.ValidateResponse_REASON_IP_NOT_ALLOWED,
	validate.ReasonRateLimited:       keywardv1.ValidateResponse_REASON_RATE_LIMITED,
	validate.ReasonUsageExceeded:     keywardv1.ValidateResponse_REASON_USAGE_EXCEEDED,
}
