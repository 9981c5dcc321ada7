package keyservice

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/keys"
)

const (
	// defaultUsageRange is GetKeyUsage's range when start_time is not set.
	defaultUsageRange = 24 * time.Hour
	// maxUsageRange bounds one GetKeyUsage: at most 2160 hourly buckets.
	maxUsageRange = 90 * 24 * time.Hour
)

// GetKeyUsage returns a key's verification counts by hour and outcome: the
// buckets whose start lies in [start_time, end_time), oldest first. Counts
// reach the store in batches (internal/usage), so the latest flush
// interval's are not in them yet.
func (s *Service) GetKeyUsage(ctx context.Context, req *keywardv1.GetKeyUsageRequest) (*keywardv1.GetKeyUsageResponse, error) {
	id := req.GetKeyId()
	if err := checkID(id); err != nil {
		return nil, err
	}
	end, err := usageTime("end_time", req.GetEndTime(), s.now())
	if err != nil {
		return nil, err
	}
	start, err := usageTime("start_time", req.GetStartTime(), end.Add(-defaultUsageRange))
	if err != nil {
		return nil, err
	}
	switch {
	case !start.Before(end):
		return nil, keys.Invalid("start_time", "must be before end_time")
	case end.Sub(start) > maxUsageRange:
		return nil, keys.Invalid("start_time", "at most 90 days before end_time")
	}
	k, err := s.store.Get(ctx, id)
	if err != nil {
		return nil, err // the store names the key
	}
	counts, err := s.store.Usage(ctx, id, start, end)
	if err != nil {
		return nil, fmt.Errorf("usage of key %s: %w", id, err)
	}
	resp := &keywardv1.GetKeyUsageResponse{LastUsedTime: timestamp(k.LastUsed)}
	var b *keywardv1.UsageBucket
	var bucketHour time.Time
	for _, c := range counts { // oldest first: one hour's counts are adjacent
		if b == nil || !c.Hour.Equal(bucketHour) {
			bucketHour = c.Hour
			b = &keywardv1.UsageBucket{StartTime: timestamppb.New(c.Hour), Counts: map[string]int64{}}
			resp.Buckets = append(resp.Buckets, b)
		}
		b.Counts[c.Reason] += c.Count
	}
	return resp, nil
}

// usageTime is ts as a time, or def when ts is not set.
func usageTime(field string, ts *timestamppb.Timestamp, def time.Time) (time.Time, error) {
	if ts == nil {
		return def, nil
	}
	if err := ts.CheckValid(); err != nil {
		return time.Time{}, keys.Invalid(field, "%v", err)
	}
	return ts.AsTime(), nil
}
