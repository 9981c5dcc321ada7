package keyservice

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/store"
)

// ListAuditEvents pages through the audit trail, newest first.
func (s *Service) ListAuditEvents(ctx context.Context, req *keywardv1.ListAuditEventsRequest) (*keywardv1.ListAuditEventsResponse, error) {
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	keyID := req.GetKeyId()
	if len(keyID) > maxIDLen {
		return nil, keys.Invalid("key_id", "longer than %d characters", maxIDLen)
	}
	q := store.AuditQuery{KeyID: keyID, Limit: size + 1}
	if t := req.GetPageToken(); t != "" {
		before, err := decodeAuditToken(t, keyID)
		if err != nil {
			return nil, err
		}
		q.BeforeSeq = before
	}
	events, err := s.store.ListAudit(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("list audit events: %w", err)
	}
	resp := &keywardv1.ListAuditEventsResponse{}
	if len(events) > size {
		events = events[:size]
		resp.NextPageToken = encodeAuditToken(events[size-1].Seq, keyID)
	}
	resp.AuditEvents = make([]*keywardv1.AuditEvent, len(events))
	for i, e := range events {
		resp.AuditEvents[i] = eventProto(e)
	}
	return resp, nil
}

func eventProto(e *audit.Event) *keywardv1.AuditEvent {
	return &keywardv1.AuditEvent{
		Sequence:      e.Seq,
		EventTime:     timestamppb.New(e.Time),
		ActorKeyId:    e.Actor,
		Action:        e.Action,
		KeyId:         e.KeyID,
		SourceAddress: e.Source,
		Before:        snapshotProto(e.KeyID, e.Before),
		After:         snapshotProto(e.KeyID, e.After),
		ChangedFields: e.Changed,
		Detail:        e.Detail,
		Hash:          hex.EncodeToString(e.Hash),
		PreviousHash:  hex.EncodeToString(e.PrevHash),
	}
}

// snapshotProto renders a recorded state as a Key (its non-secret fields).
func snapshotProto(id string, s *audit.Snapshot) *keywardv1.Key {
	if s == nil {
		return nil
	}
	k := &keywardv1.Key{
		KeyId: id, DisplayName: s.Name, Description: s.Description, Environment: s.Environment,
		MaskedKey: s.Masked, Scopes: s.Scopes, Metadata: s.Metadata, AllowedCidrs: s.AllowedCIDRs,
		RateLimit: rateLimitProto(valueOr(s.RateLimit)), PreviousMaskedKey: s.PrevMasked,
		Recoverable: s.Recoverable, Etag: strconv.FormatInt(s.Version, 10),
	}
	switch s.State {
	case keys.StateActive.String():
		k.State = keywardv1.Key_STATE_ACTIVE
	case keys.StateDisabled.String():
		k.State = keywardv1.Key_STATE_DISABLED
	}
	if s.ExpireTime != nil {
		k.ExpireTime = timestamppb.New(*s.ExpireTime)
	}
	if s.PrevExpire != nil {
		k.PreviousKeyExpireTime = timestamppb.New(*s.PrevExpire)
	}
	if s.Quota != nil {
		k.Quota = &keywardv1.Quota{Limit: s.Quota.Limit, Refill: refills[s.Quota.Refill]}
	}
	return k
}

func valueOr[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// Audit page tokens: base64 of "a1.<crc of key_id>.<last seq>".
func encodeAuditToken(lastSeq int64, keyID string) string {
	return base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "a1.%08x.%d", crc32.ChecksumIEEE([]byte(keyID)), lastSeq))
}

func decodeAuditToken(token, keyID string) (int64, error) {
	bad := keys.Invalid("page_token", "malformed; pass next_page_token from a previous response unchanged")
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return 0, bad
	}
	parts := strings.SplitN(string(raw), ".", 3)
	if len(parts) != 3 || parts[0] != "a1" {
		return 0, bad
	}
	seq, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil || seq < 1 {
		return 0, bad
	}
	if parts[1] != fmt.Sprintf("%08x", crc32.ChecksumIEEE([]byte(keyID))) {
		return 0, keys.Invalid("page_token", "was issued for a different key_id")
	}
	return seq, nil
}
