package keyservice

import (
	"context"
	"encoding/base64"
	"fmt"
	"hash/crc32"
	"strings"
	"time"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/keymat"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/store"
)

// maxUnusedDays bounds ListKeysRequest.unused_days (ten years).
const maxUnusedDays = 3650

// ListKeys pages through keys, filtered by name or by key value, and
// optionally to those unused for unused_days.
func (s *Service) ListKeys(ctx context.Context, req *keywardv1.ListKeysRequest) (*keywardv1.ListKeysResponse, error) {
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	query := strings.TrimSpace(req.GetQuery())
	if len(query) > maxQueryLen {
		return nil, keys.Invalid("query", "longer than %d characters", maxQueryLen)
	}
	q := searchQuery(query)
	// A page token is bound to the whole query: the text and the filter.
	tokenQuery := query
	switch days := req.GetUnusedDays(); {
	case days < 0 || days > maxUnusedDays:
		return nil, keys.Invalid("unused_days", "want 0 (no filter) to %d", maxUnusedDays)
	case days > 0:
		q.UnusedBefore = s.now().Add(-time.Duration(days) * 24 * time.Hour)
		tokenQuery = fmt.Sprintf("%s\x00unused_days=%d", query, days)
	}
	if req.GetPageToken() != "" {
		after, err := decodePageToken(req.GetPageToken(), tokenQuery)
		if err != nil {
			return nil, err
		}
		q.AfterID = after
	}
	q.Limit = size + 1 // one more tells whether another page exists
	found, err := s.store.List(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	resp := &keywardv1.ListKeysResponse{}
	if len(found) > size {
		found = found[:size]
		resp.NextPageToken = encodePageToken(found[size-1].ID, tokenQuery)
	}
	resp.Keys = make([]*keywardv1.Key, len(found))
	for i, k := range found {
		resp.Keys[i] = s.toProto(k)
	}
	return resp, nil
}

// searchQuery decides how a typed query matches: a full, checksum-valid
// secret matches by hash only; the beginning of a secret matches by its
// stored visible start; anything else matches names.
func searchQuery(query string) store.ListQuery {
	if query == "" {
		return store.ListQuery{}
	}
	if secret, err := keymat.Parse(query); err == nil {
		return store.ListQuery{Hash: secret.Hash()}
	}
	q := store.ListQuery{NameContains: query}
	if strings.HasPrefix(query, keymat.Issuer+"_") {
		q.StartPrefix = query
	}
	return q
}

// Page tokens are opaque to clients: base64 of "v1.<crc of query>.<last id>".
// The query's checksum makes a token reused with another query an error
// (AIP-158) without putting the query, which may be a secret, in the token.
func encodePageToken(lastID, query string) string {
	return base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "v1.%08x.%s", crc32.ChecksumIEEE([]byte(query)), lastID))
}

func decodePageToken(token, query string) (string, error) {
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return "", keys.Invalid("page_token", "malformed; pass next_page_token from a previous response unchanged")
	}
	parts := strings.SplitN(string(raw), ".", 3)
	if len(parts) != 3 || parts[0] != "v1" || !strings.HasPrefix(parts[2], keys.IDPrefix) || len(parts[2]) > maxIDLen {
		return "", keys.Invalid("page_token", "malformed; pass next_page_token from a previous response unchanged")
	}
	if parts[1] != fmt.Sprintf("%08x", crc32.ChecksumIEEE([]byte(query))) {
		return "", keys.Invalid("page_token", "was issued for a different query")
	}
	return parts[2], nil
}
