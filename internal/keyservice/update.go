package keyservice

import (
	"context"
	"net/netip"
	"strings"
	"time"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/keys"
)

// mutable are the fields UpdateKey may change, by their proto names.
var mutable = []string{
	"display_name", "description", "scopes", "metadata", "expire_time",
	"allowed_cidrs", "rate_limit", "quota",
}

// outputOnly fields may appear in a mask (a client PATCHing back a whole Key
// it read) and are ignored, as AIP-203 asks.
var outputOnly = map[string]bool{
	"key_id": true, "state": true, "masked_key": true, "create_time": true,
	"update_time": true, "last_used_time": true, "etag": true,
	"previous_masked_key": true, "previous_key_expire_time": true,
}

// UpdateKey changes the fields named in update_mask.
func (s *Service) UpdateKey(ctx context.Context, req *keywardv1.UpdateKeyRequest) (*keywardv1.UpdateKeyResponse, error) {
	in := req.GetKey()
	if in == nil {
		return nil, keys.Invalid("key", "required")
	}
	paths, err := maskPaths(req)
	if err != nil {
		return nil, err
	}
	// Check everything before the transaction, so a bad request writes nothing.
	now := s.now()
	var (
		scopes []string
		expire time.Time
		cidrs  []netip.Prefix
		rate   keys.RateLimit
		quota  keys.Quota
		upd    = map[string]bool{}
	)
	for _, p := range paths {
		upd[p] = true
		switch p {
		case "display_name":
			err = checkText("display_name", in.GetDisplayName(), true, maxNameLen)
		case "description":
			err = checkText("description", in.GetDescription(), false, maxDescriptionLen)
		case "scopes":
			scopes, err = normScopes(in.GetScopes())
		case "metadata":
			err = checkMetadata(in.GetMetadata())
		case "expire_time":
			// Absent in the body: clear the expiry.
			expire, _, err = expiry(in.GetExpireTime(), in.GetTtl(), now)
		case "allowed_cidrs":
			cidrs, err = parseCIDRs(in.GetAllowedCidrs())
		case "rate_limit":
			rate, err = parseRateLimit(in.GetRateLimit())
		case "quota":
			quota, err = parseQuota(in.GetQuota())
		}
		if err != nil {
			return nil, err
		}
	}
	k, err := s.update(ctx, in.GetKeyId(), audit.ActionUpdate, func(k *keys.Key) error {
		if err := checkEtag(in.GetEtag())(k); err != nil {
			return err
		}
		if upd["environment"] && in.GetEnvironment() != k.Environment {
			return keys.Invalid("update_mask", "environment is immutable: it is part of the secret's prefix")
		}
		if upd["recoverable"] && in.GetRecoverable() != (len(k.Sealed) > 0) {
			return keys.Invalid("update_mask", "recoverable is immutable: a secret can be kept only when it is created; create a new recoverable key instead")
		}
		if upd["display_name"] {
			k.Name = in.GetDisplayName()
		}
		if upd["description"] {
			k.Description = in.GetDescription()
		}
		if upd["scopes"] {
			k.Scopes = scopes
		}
		if upd["metadata"] {
			k.Metadata = in.GetMetadata()
		}
		if upd["expire_time"] {
			k.ExpireTime = expire
		}
		if upd["allowed_cidrs"] {
			k.AllowedCIDRs = cidrs
		}
		if upd["rate_limit"] {
			k.RateLimit = rate
		}
		if upd["quota"] {
			k.Quota = quota
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &keywardv1.UpdateKeyResponse{Key: s.toProto(k)}, nil
}

// maskPaths returns the fields to update. An absent mask means every mutable
// field the request populates (AIP-134); "*" means all mutable fields.
func maskPaths(req *keywardv1.UpdateKeyRequest) ([]string, error) {
	m := req.GetUpdateMask()
	if m == nil || len(m.GetPaths()) == 0 {
		in := req.GetKey()
		var out []string
		for p, set := range map[string]bool{
			"display_name":  in.GetDisplayName() != "",
			"description":   in.GetDescription() != "",
			"scopes":        len(in.GetScopes()) > 0,
			"metadata":      len(in.GetMetadata()) > 0,
			"expire_time":   in.GetExpireTime() != nil || in.GetTtl() != nil,
			"allowed_cidrs": len(in.GetAllowedCidrs()) > 0,
			"rate_limit":    in.GetRateLimit() != nil,
			"quota":         in.GetQuota() != nil,
		} {
			if set {
				out = append(out, p)
			}
		}
		if len(out) == 0 {
			return nil, keys.Invalid("update_mask", "nothing to update: set update_mask or a mutable field (%v)", mutable)
		}
		return out, nil
	}
	var out []string
	for _, p := range m.GetPaths() {
		switch {
		case p == "*":
			out = append(out, mutable...)
		case p == "ttl":
			out = append(out, "expire_time") // ttl is how expire_time may be given
		case p == "environment" || p == "recoverable":
			out = append(out, p) // allowed only when unchanged; checked against the row
		case outputOnly[p]:
		case contains(mutable, p):
			out = append(out, p)
		case strings.HasPrefix(p, "rate_limit.") || strings.HasPrefix(p, "quota."):
			// grpc-gateway names a message's leaves when it derives the mask
			// from a body ({"rateLimit": {"limit": 7}} → rate_limit.limit);
			// a policy is replaced whole, with defaults for what is left out.
			out = append(out, p[:strings.IndexByte(p, '.')])
		default:
			return nil, keys.Invalid("update_mask", "unknown field %q: updatable fields are %v", truncate(p), mutable)
		}
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
