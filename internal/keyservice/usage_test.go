package keyservice_test

import (
	"maps"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/keymat"
	"github.com/keyward/keyward/internal/testenv"
	"github.com/keyward/keyward/internal/testserver"
)

// usageFlush is the test servers' --usage-flush-interval.
const usageFlush = 100 * time.Millisecond

// forEachStoreFlushing is forEachStore with usage flushed every usageFlush.
func forEachStoreFlushing(t *testing.T, test func(t *testing.T, srv *testserver.Server)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		test(t, testserver.Start(t, testserver.Options{UsageFlushInterval: usageFlush}))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		test(t, testserver.Start(t, testserver.Options{PostgresDSN: testenv.Postgres(t), UsageFlushInterval: usageFlush}))
	})
}

func (f *fixture) usage(req *keywardv1.GetKeyUsageRequest) *keywardv1.GetKeyUsageResponse {
	f.t.Helper()
	resp, err := f.c.GetKeyUsage(f.ctx, req)
	if err != nil {
		f.t.Fatalf("GetKeyUsage: %v", err)
	}
	return resp
}

// usageTotals sums a key's buckets by reason, checking each bucket's start
// is a whole hour.
func usageTotals(t *testing.T, resp *keywardv1.GetKeyUsageResponse) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, b := range resp.GetBuckets() {
		if start := b.GetStartTime().AsTime(); !start.Equal(start.Truncate(time.Hour)) {
			t.Fatalf("bucket starts at %v, not on the hour", start)
		}
		for reason, n := range b.GetCounts() {
			out[reason] += n
		}
	}
	return out
}

func TestGetKeyUsage(t *testing.T) {
	forEachStoreFlushing(t, func(t *testing.T, srv *testserver.Server) {
		f := newFixture(t, srv)
		used := f.create(&keywardv1.Key{DisplayName: "used"})
		refused := f.create(&keywardv1.Key{DisplayName: "refused"})
		idle := f.create(&keywardv1.Key{DisplayName: "idle"}).GetKey()
		before := time.Now().Truncate(time.Microsecond)
		for range 7 {
			f.wantReason(used.GetSecret(), keywardv1.ValidateResponse_REASON_VALID)
		}
		f.wantReason(refused.GetSecret(), keywardv1.ValidateResponse_REASON_VALID)
		f.wantReason(refused.GetSecret(), keywardv1.ValidateResponse_REASON_VALID)
		if _, err := f.c.DisableKey(f.ctx, &keywardv1.DisableKeyRequest{KeyId: refused.GetKey().GetKeyId()}); err != nil {
			t.Fatalf("DisableKey: %v", err)
		}
		disabledAt := time.Now()
		for range 3 {
			f.wantReason(refused.GetSecret(), keywardv1.ValidateResponse_REASON_DISABLED)
		}
		unknown, err := keymat.Generate("live")
		if err != nil {
			t.Fatal(err)
		}
		f.wantReason(unknown.String(), keywardv1.ValidateResponse_REASON_NOT_FOUND) // no key: counted nowhere

		want := map[string]map[string]int64{
			used.GetKey().GetKeyId():    {"REASON_VALID": 7},
			refused.GetKey().GetKeyId(): {"REASON_VALID": 2, "REASON_DISABLED": 3},
			idle.GetKeyId():             {},
		}
		got := map[string]*keywardv1.GetKeyUsageResponse{}
		deadline := time.Now().Add(10 * time.Second)
		for id, w := range want {
			for {
				got[id] = f.usage(&keywardv1.GetKeyUsageRequest{KeyId: id})
				if maps.Equal(usageTotals(t, got[id]), w) || time.Now().After(deadline) {
					break
				}
				time.Sleep(usageFlush / 2)
			}
		}
		time.Sleep(3 * usageFlush) // later flushes add nothing
		for id, w := range want {
			got[id] = f.usage(&keywardv1.GetKeyUsageRequest{KeyId: id})
			if totals := usageTotals(t, got[id]); !maps.Equal(totals, w) {
				t.Errorf("usage of %s: %v, want %v", id, totals, w)
			}
		}

		after := time.Now()
		for id, upTo := range map[string]time.Time{used.GetKey().GetKeyId(): after, refused.GetKey().GetKeyId(): disabledAt} {
			lu := got[id].GetLastUsedTime()
			if lu == nil || lu.AsTime().Before(before) || lu.AsTime().After(upTo) {
				t.Errorf("last_used_time of %s: %v, want between %v and %v", id, lu.AsTime(), before, upTo)
			}
			k, err := f.c.GetKey(f.ctx, &keywardv1.GetKeyRequest{KeyId: id})
			if err != nil || !k.GetKey().GetLastUsedTime().AsTime().Equal(lu.AsTime()) {
				t.Errorf("GetKey(%s).last_used_time = %v (%v), want %v", id, k.GetKey().GetLastUsedTime(), err, lu.AsTime())
			}
		}
		if lu := got[idle.GetKeyId()].GetLastUsedTime(); lu != nil {
			t.Errorf("never used key has last_used_time %v", lu.AsTime())
		}

		// Ranges: the buckets whose start lies in [start_time, end_time).
		id := used.GetKey().GetKeyId()
		now := time.Now()
		around := f.usage(&keywardv1.GetKeyUsageRequest{KeyId: id,
			StartTime: timestamppb.New(now.Add(-time.Hour)), EndTime: timestamppb.New(now.Add(time.Hour))})
		if totals := usageTotals(t, around); totals["REASON_VALID"] != 7 {
			t.Errorf("usage in [now-1h, now+1h): %v, want 7 valid", totals)
		}
		earlier := f.usage(&keywardv1.GetKeyUsageRequest{KeyId: id,
			StartTime: timestamppb.New(now.Add(-90 * 24 * time.Hour)), EndTime: timestamppb.New(now.Add(-2 * time.Hour))})
		if len(earlier.GetBuckets()) != 0 || earlier.GetLastUsedTime() == nil {
			t.Errorf("usage until two hours ago: %v, want no buckets and the last use", earlier)
		}
	})
}

func TestGetKeyUsageRefused(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	f := newFixture(t, srv)
	id := f.create(&keywardv1.Key{DisplayName: "k"}).GetKey().GetKeyId()
	now := time.Now()
	ts := timestamppb.New
	for _, tc := range []struct {
		name string
		req  *keywardv1.GetKeyUsageRequest
		code codes.Code
		msg  string
	}{
		{"fail/no-key-id", &keywardv1.GetKeyUsageRequest{}, codes.InvalidArgument, "key_id"},
		{"fail/not-found", &keywardv1.GetKeyUsageRequest{KeyId: "key_0000000000000000000000000"}, codes.NotFound, ""},
		{"fail/start-after-end", &keywardv1.GetKeyUsageRequest{KeyId: id, StartTime: ts(now), EndTime: ts(now.Add(-time.Hour))}, codes.InvalidArgument, "start_time"},
		{"fail/empty-range", &keywardv1.GetKeyUsageRequest{KeyId: id, StartTime: ts(now), EndTime: ts(now)}, codes.InvalidArgument, "start_time"},
		{"fail/over-90-days", &keywardv1.GetKeyUsageRequest{KeyId: id, StartTime: ts(now.Add(-90*24*time.Hour - time.Second)), EndTime: ts(now)}, codes.InvalidArgument, "90 days"},
		{"fail/default-start-after-end", &keywardv1.GetKeyUsageRequest{KeyId: id, StartTime: ts(now.Add(time.Hour))}, codes.InvalidArgument, "start_time"},
		{"fail/invalid-timestamp", &keywardv1.GetKeyUsageRequest{KeyId: id, EndTime: &timestamppb.Timestamp{Nanos: -1}}, codes.InvalidArgument, "end_time"},
		{"ok/90-days", &keywardv1.GetKeyUsageRequest{KeyId: id, StartTime: ts(now.Add(-90 * 24 * time.Hour)), EndTime: ts(now)}, codes.OK, ""},
		{"ok/defaults", &keywardv1.GetKeyUsageRequest{KeyId: id}, codes.OK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := f.c.GetKeyUsage(f.ctx, tc.req)
			wantCode(t, err, tc.code, tc.msg)
			if err == nil && (len(resp.GetBuckets()) != 0 || resp.GetLastUsedTime() != nil) {
				t.Fatalf("a never-used key has usage: %v", resp)
			}
		})
	}
}

func TestListKeysUnusedDays(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	f := newFixture(t, srv)
	for _, name := range []string{"a", "b", "c"} {
		f.create(&keywardv1.Key{DisplayName: name})
	}
	list := func(req *keywardv1.ListKeysRequest) (*keywardv1.ListKeysResponse, error) {
		return f.c.ListKeys(f.ctx, req)
	}
	all, err := list(&keywardv1.ListKeysRequest{})
	if err != nil || len(all.GetKeys()) != 4 { // and the admin key
		t.Fatalf("ListKeys: %d keys (%v), want 4", len(all.GetKeys()), err)
	}
	// Every key is younger than a day: none has been unused that long.
	for _, days := range []int32{1, 3650} {
		resp, err := list(&keywardv1.ListKeysRequest{UnusedDays: days})
		if err != nil || len(resp.GetKeys()) != 0 {
			t.Errorf("ListKeys(unused_days=%d): %v (%v), want none", days, resp.GetKeys(), err)
		}
	}
	for _, days := range []int32{-1, 3651} {
		_, err := list(&keywardv1.ListKeysRequest{UnusedDays: days})
		wantCode(t, err, codes.InvalidArgument, "unused_days")
	}
	// A page token is bound to the filter too.
	page, err := list(&keywardv1.ListKeysRequest{PageSize: 1})
	if err != nil || page.GetNextPageToken() == "" {
		t.Fatalf("ListKeys(page_size=1): %v, %v", page, err)
	}
	_, err = list(&keywardv1.ListKeysRequest{PageSize: 1, PageToken: page.GetNextPageToken(), UnusedDays: 30})
	wantCode(t, err, codes.InvalidArgument, "different query")
	if _, err := list(&keywardv1.ListKeysRequest{PageSize: 1, PageToken: page.GetNextPageToken()}); err != nil {
		t.Fatalf("ListKeys with its own page token: %v", err)
	}
}
