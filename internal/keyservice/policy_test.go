package keyservice_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/testserver"
)

const (
	valid        = keywardv1.ValidateResponse_REASON_VALID
	notFound     = keywardv1.ValidateResponse_REASON_NOT_FOUND
	disabled     = keywardv1.ValidateResponse_REASON_DISABLED
	expired      = keywardv1.ValidateResponse_REASON_EXPIRED
	noScope      = keywardv1.ValidateResponse_REASON_INSUFFICIENT_SCOPE
	ipRefused    = keywardv1.ValidateResponse_REASON_IP_NOT_ALLOWED
	rateLimited  = keywardv1.ValidateResponse_REASON_RATE_LIMITED
	usageExceded = keywardv1.ValidateResponse_REASON_USAGE_EXCEEDED
)

// check validates req and fails unless the answer has reason want.
func (f *fixture) check(req *keywardv1.ValidateRequest, want keywardv1.ValidateResponse_Reason) *keywardv1.ValidateResponse {
	f.t.Helper()
	got, err := f.c.Validate(context.Background(), req)
	if err != nil {
		f.t.Fatalf("Validate: %v", err)
	}
	if got.GetReason() != want || got.GetValid() != (want == valid) {
		f.t.Fatalf("Validate: valid=%v reason=%v, want %v", got.GetValid(), got.GetReason(), want)
	}
	if !got.GetValid() && got.GetKey() != nil {
		f.t.Fatal("a refusal carried the key")
	}
	return got
}

func (f *fixture) update(k *keywardv1.Key, paths ...string) *keywardv1.Key {
	f.t.Helper()
	resp, err := f.c.UpdateKey(f.ctx, &keywardv1.UpdateKeyRequest{Key: k, UpdateMask: &fieldmaskpb.FieldMask{Paths: paths}})
	if err != nil {
		f.t.Fatalf("UpdateKey %v: %v", paths, err)
	}
	return resp.GetKey()
}

func TestPolicyInputIsChecked(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	f := newFixture(t, srv)
	past := timestamppb.New(time.Now().Add(-time.Hour))
	for _, tc := range []struct {
		name  string
		key   *keywardv1.Key
		field string
	}{
		{"bad cidr", &keywardv1.Key{AllowedCidrs: []string{"10.0.0.0/33"}}, "allowed_cidrs"},
		{"host bits", &keywardv1.Key{AllowedCidrs: []string{"10.0.0.1/8"}}, "did you mean 10.0.0.0/8"},
		{"not an address", &keywardv1.Key{AllowedCidrs: []string{"example.com"}}, "allowed_cidrs"},
		{"zero rate", &keywardv1.Key{RateLimit: &keywardv1.RateLimit{Limit: 0}}, "rate_limit.limit"},
		{"negative burst", &keywardv1.Key{RateLimit: &keywardv1.RateLimit{Limit: 5, Burst: -1}}, "rate_limit.burst"},
		{"short period", &keywardv1.Key{RateLimit: &keywardv1.RateLimit{Limit: 5, Period: durationpb.New(time.Millisecond)}}, "rate_limit.period"},
		{"negative quota", &keywardv1.Key{Quota: &keywardv1.Quota{Limit: -1}}, "quota.limit"},
		{"unknown refill", &keywardv1.Key{Quota: &keywardv1.Quota{Limit: 1, Refill: 9}}, "quota.refill"},
		{"past expiry", &keywardv1.Key{ExpireTime: past}, "expire_time"},
		{"negative ttl", &keywardv1.Key{Ttl: durationpb.New(-time.Second)}, "ttl"},
		{"ttl and expiry", &keywardv1.Key{Ttl: durationpb.New(time.Hour), ExpireTime: timestamppb.New(time.Now().Add(time.Hour))}, "not both"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.key.DisplayName = "policy " + tc.name
			_, err := f.c.CreateKey(f.ctx, &keywardv1.CreateKeyRequest{Key: tc.key})
			wantCode(t, err, codes.InvalidArgument, tc.field)
		})
	}
	// The same checks guard UpdateKey, and a refused update changes nothing.
	c := f.create(&keywardv1.Key{DisplayName: "guarded", AllowedCidrs: []string{"192.0.2.0/24"}})
	id := c.GetKey().GetKeyId()
	_, err := f.c.UpdateKey(f.ctx, &keywardv1.UpdateKeyRequest{
		Key:        &keywardv1.Key{KeyId: id, AllowedCidrs: []string{"300.1.1.1"}, DisplayName: "renamed"},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"display_name", "allowed_cidrs"}},
	})
	wantCode(t, err, codes.InvalidArgument, "allowed_cidrs")
	got, err := f.c.GetKey(f.ctx, &keywardv1.GetKeyRequest{KeyId: id})
	if err != nil || got.GetKey().GetDisplayName() != "guarded" || got.GetKey().GetAllowedCidrs()[0] != "192.0.2.0/24" {
		t.Fatalf("a refused update changed the key: %v %v", got, err)
	}
	_, err = f.c.RegenerateKey(f.ctx, &keywardv1.RegenerateKeyRequest{KeyId: id, GracePeriod: durationpb.New(8 * 24 * time.Hour)})
	wantCode(t, err, codes.InvalidArgument, "grace_period")
	f.check(&keywardv1.ValidateRequest{Key: c.GetSecret(), ClientIp: "192.0.2.9"}, valid) // not regenerated
	_, err = f.c.Validate(context.Background(), &keywardv1.ValidateRequest{Key: c.GetSecret(), ClientIp: "nope"})
	wantCode(t, err, codes.InvalidArgument, "client_ip")
}

func TestTTLAndExpiryEdits(t *testing.T) {
	forEachStore(t, func(t *testing.T, srv *testserver.Server) {
		f := newFixture(t, srv)
		before := time.Now()
		c := f.create(&keywardv1.Key{DisplayName: "ttl", Ttl: durationpb.New(time.Hour)})
		exp := c.GetKey().GetExpireTime().AsTime()
		if exp.Before(before.Add(time.Hour-time.Second)) || exp.After(time.Now().Add(time.Hour)) {
			t.Fatalf("ttl 1h gave expire_time %v (created at %v)", exp, before)
		}
		id := c.GetKey().GetKeyId()
		f.check(&keywardv1.ValidateRequest{Key: c.GetSecret()}, valid)
		// Shortening the expiry takes effect at once, through every cache.
		f.update(&keywardv1.Key{KeyId: id, Ttl: durationpb.New(time.Second)}, "ttl")
		time.Sleep(1100 * time.Millisecond)
		f.check(&keywardv1.ValidateRequest{Key: c.GetSecret()}, expired)
		// Clearing it (expire_time in the mask, absent in the body) revives the key.
		k := f.update(&keywardv1.Key{KeyId: id}, "expire_time")
		if k.GetExpireTime() != nil {
			t.Fatalf("expire_time not cleared: %v", k.GetExpireTime())
		}
		f.check(&keywardv1.ValidateRequest{Key: c.GetSecret()}, valid)
	})
}

func TestScopeWildcards(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	f := newFixture(t, srv)
	c := f.create(&keywardv1.Key{DisplayName: "orders", Scopes: []string{"orders:*", "billing:read"}})
	for _, tc := range []struct {
		scopes []string
		want   keywardv1.ValidateResponse_Reason
	}{
		{[]string{"orders:read"}, valid},
		{[]string{"orders:write", "billing:read"}, valid},
		{[]string{"orders:items:write"}, valid},
		{[]string{"billing:write"}, noScope},
		{[]string{"ordersx:read"}, noScope},
		{[]string{"orders"}, noScope},
	} {
		f.check(&keywardv1.ValidateRequest{Key: c.GetSecret(), RequiredScopes: tc.scopes}, tc.want)
	}
	all := f.create(&keywardv1.Key{DisplayName: "everything", Scopes: []string{"*"}})
	f.check(&keywardv1.ValidateRequest{Key: all.GetSecret(), RequiredScopes: []string{"anything:at:all"}}, valid)
	// A wildcard never makes an admin: the admin scope is matched exactly.
	adminish := testserver.WithBearer(context.Background(), all.GetSecret())
	_, err := f.c.ListKeys(adminish, &keywardv1.ListKeysRequest{})
	wantCode(t, err, codes.PermissionDenied, "")
	kw := f.create(&keywardv1.Key{DisplayName: "keyward-wide", Scopes: []string{"keyward:*"}})
	_, err = f.c.ListKeys(testserver.WithBearer(context.Background(), kw.GetSecret()), &keywardv1.ListKeysRequest{})
	wantCode(t, err, codes.PermissionDenied, "")
}

func TestIPAllowList(t *testing.T) {
	forEachStore(t, func(t *testing.T, srv *testserver.Server) {
		f := newFixture(t, srv)
		c := f.create(&keywardv1.Key{DisplayName: "plant", AllowedCidrs: []string{"10.0.0.0/8", "2001:db8::/32", "192.0.2.7"}})
		if got := c.GetKey().GetAllowedCidrs(); len(got) != 3 || got[2] != "192.0.2.7/32" {
			t.Fatalf("allowed_cidrs = %v, want canonical blocks", got)
		}
		for ip, want := range map[string]keywardv1.ValidateResponse_Reason{
			"10.1.2.3":        valid,
			"::ffff:10.9.9.9": valid,
			"2001:db8::1":     valid,
			"192.0.2.7":       valid,
			"192.0.2.8":       ipRefused,
			"11.0.0.1":        ipRefused,
			"2001:db9::1":     ipRefused,
			"":                ipRefused,
		} {
			f.check(&keywardv1.ValidateRequest{Key: c.GetSecret(), ClientIp: ip}, want)
		}
		// Emptying the list takes effect at once.
		f.update(&keywardv1.Key{KeyId: c.GetKey().GetKeyId()}, "allowed_cidrs")
		f.check(&keywardv1.ValidateRequest{Key: c.GetSecret(), ClientIp: "11.0.0.1"}, valid)
		f.check(&keywardv1.ValidateRequest{Key: c.GetSecret()}, valid)
	})
}

func TestRateLimit(t *testing.T) {
	forEachStore(t, func(t *testing.T, srv *testserver.Server) {
		f := newFixture(t, srv)
		c := f.create(&keywardv1.Key{DisplayName: "limited", RateLimit: &keywardv1.RateLimit{Limit: 5, Period: durationpb.New(time.Minute)}})
		if rl := c.GetKey().GetRateLimit(); rl.GetBurst() != 5 || rl.GetPeriod().AsDuration() != time.Minute {
			t.Fatalf("rate_limit = %v, want burst defaulting to limit", rl)
		}
		for i := range 5 {
			got := f.check(&keywardv1.ValidateRequest{Key: c.GetSecret()}, valid)
			if rl := got.GetRateLimit(); rl.GetLimit() != 5 || rl.GetRemaining() != int64(4-i) {
				t.Fatalf("request %d: rate_limit status %v, want remaining %d", i, rl, 4-i)
			}
		}
		got := f.check(&keywardv1.ValidateRequest{Key: c.GetSecret()}, rateLimited)
		if ra := got.GetRetryAfter().AsDuration(); ra <= 0 || ra > 12*time.Second {
			t.Fatalf("retry_after = %v, want about 12s (one emission interval)", ra)
		}
		// Requests refused for another reason use no tokens.
		other := f.create(&keywardv1.Key{DisplayName: "limited-scoped", Scopes: []string{"a"}, RateLimit: &keywardv1.RateLimit{Limit: 1, Period: durationpb.New(time.Hour)}})
		for range 3 {
			f.check(&keywardv1.ValidateRequest{Key: other.GetSecret(), RequiredScopes: []string{"b"}}, noScope)
		}
		f.check(&keywardv1.ValidateRequest{Key: other.GetSecret(), RequiredScopes: []string{"a"}}, valid)
		// Raising the limit applies at once: the key's state is cut to the
		// new capacity, so it waits one new interval (10 ms), not the old 12 s.
		f.update(&keywardv1.Key{KeyId: c.GetKey().GetKeyId(), RateLimit: &keywardv1.RateLimit{Limit: 100, Period: durationpb.New(time.Second)}}, "rate_limit")
		if got := f.validate(c.GetSecret()); !got.GetValid() && got.GetRetryAfter().AsDuration() > 10*time.Millisecond {
			t.Fatalf("after raising the limit: %v, want a retry_after of at most the new 10 ms interval", got)
		}
		time.Sleep(30 * time.Millisecond)
		f.check(&keywardv1.ValidateRequest{Key: c.GetSecret()}, valid)
	})
}

func TestQuota(t *testing.T) {
	forEachStore(t, func(t *testing.T, srv *testserver.Server) {
		f := newFixture(t, srv)
		c := f.create(&keywardv1.Key{DisplayName: "metered", Quota: &keywardv1.Quota{Limit: 3}})
		if q := c.GetKey().GetQuota(); q.GetRemaining() != 3 || q.GetRefillTime() != nil {
			t.Fatalf("new quota = %v, want 3 remaining and no refill", q)
		}
		for i := range 3 {
			got := f.check(&keywardv1.ValidateRequest{Key: c.GetSecret()}, valid)
			if got.RemainingUses == nil || got.GetRemainingUses() != int64(2-i) || got.GetKey().GetQuota().GetRemaining() != int64(2-i) {
				t.Fatalf("use %d: remaining_uses %v, key quota %v", i, got.RemainingUses, got.GetKey().GetQuota())
			}
		}
		got := f.check(&keywardv1.ValidateRequest{Key: c.GetSecret()}, usageExceded)
		if got.GetRetryAfter() != nil {
			t.Fatalf("a quota that never refills gave retry_after %v", got.GetRetryAfter())
		}
		id := c.GetKey().GetKeyId()
		k, err := f.c.GetKey(f.ctx, &keywardv1.GetKeyRequest{KeyId: id})
		if err != nil || k.GetKey().GetQuota().GetRemaining() != 0 {
			t.Fatalf("GetKey quota = %v (%v), want 0 remaining", k.GetKey().GetQuota(), err)
		}
		// A new quota starts counting afresh, and refills are announced.
		up := f.update(&keywardv1.Key{KeyId: id, Quota: &keywardv1.Quota{Limit: 2, Refill: keywardv1.Quota_REFILL_DAILY}}, "quota")
		if q := up.GetQuota(); q.GetRemaining() != 2 || q.GetRefillTime() == nil || !q.GetRefillTime().AsTime().After(time.Now()) {
			t.Fatalf("updated quota = %v", q)
		}
		f.check(&keywardv1.ValidateRequest{Key: c.GetSecret()}, valid)
		f.check(&keywardv1.ValidateRequest{Key: c.GetSecret()}, valid)
		got = f.check(&keywardv1.ValidateRequest{Key: c.GetSecret()}, usageExceded)
		if ra := got.GetRetryAfter().AsDuration(); ra <= 0 || ra > 24*time.Hour {
			t.Fatalf("daily quota retry_after = %v", ra)
		}
		// Removing the quota lifts it.
		f.update(&keywardv1.Key{KeyId: id}, "quota")
		f.check(&keywardv1.ValidateRequest{Key: c.GetSecret()}, valid)
	})
}

func TestRotationWithGracePeriod(t *testing.T) {
	forEachStore(t, func(t *testing.T, srv *testserver.Server) {
		f := newFixture(t, srv)
		regen := func(id string, grace time.Duration) *keywardv1.RegenerateKeyResponse {
			t.Helper()
			r, err := f.c.RegenerateKey(f.ctx, &keywardv1.RegenerateKeyRequest{KeyId: id, GracePeriod: durationpb.New(grace)})
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		c := f.create(&keywardv1.Key{DisplayName: "rotating"})
		id := c.GetKey().GetKeyId()
		f.check(&keywardv1.ValidateRequest{Key: c.GetSecret()}, valid)
		r := regen(id, time.Hour)
		if r.GetKey().GetPreviousMaskedKey() != c.GetKey().GetMaskedKey() {
			t.Fatalf("previous_masked_key %q, want the old %q", r.GetKey().GetPreviousMaskedKey(), c.GetKey().GetMaskedKey())
		}
		if end := r.GetKey().GetPreviousKeyExpireTime().AsTime(); end.Before(time.Now().Add(59*time.Minute)) || end.After(time.Now().Add(time.Hour)) {
			t.Fatalf("previous_key_expire_time %v, want in an hour", end)
		}
		f.check(&keywardv1.ValidateRequest{Key: c.GetSecret()}, valid)
		f.check(&keywardv1.ValidateRequest{Key: r.GetSecret()}, valid)
		// Pasting the old secret into search still finds the key.
		l, err := f.c.ListKeys(f.ctx, &keywardv1.ListKeysRequest{Query: c.GetSecret()})
		if err != nil || len(l.GetKeys()) != 1 || l.GetKeys()[0].GetKeyId() != id {
			t.Fatalf("search by the replaced secret: %v %v", l, err)
		}

		// Regenerating again ends the first secret's grace at once.
		r2 := regen(id, time.Hour)
		f.check(&keywardv1.ValidateRequest{Key: c.GetSecret()}, notFound)
		f.check(&keywardv1.ValidateRequest{Key: r.GetSecret()}, valid)
		f.check(&keywardv1.ValidateRequest{Key: r2.GetSecret()}, valid)

		// Disabling ends both (the replaced one for good); enabling brings
		// back only the current one.
		if _, err := f.c.DisableKey(f.ctx, &keywardv1.DisableKeyRequest{KeyId: id}); err != nil {
			t.Fatal(err)
		}
		f.check(&keywardv1.ValidateRequest{Key: r.GetSecret()}, notFound)
		f.check(&keywardv1.ValidateRequest{Key: r2.GetSecret()}, disabled)
		e, err := f.c.EnableKey(f.ctx, &keywardv1.EnableKeyRequest{KeyId: id})
		if err != nil || e.GetKey().GetPreviousMaskedKey() != "" {
			t.Fatalf("enable: %v %v", e, err)
		}
		f.check(&keywardv1.ValidateRequest{Key: r.GetSecret()}, notFound)
		f.check(&keywardv1.ValidateRequest{Key: r2.GetSecret()}, valid)

		// The grace period ends on time.
		r3 := regen(id, time.Second)
		f.check(&keywardv1.ValidateRequest{Key: r2.GetSecret()}, valid)
		time.Sleep(1100 * time.Millisecond)
		f.check(&keywardv1.ValidateRequest{Key: r2.GetSecret()}, expired)
		f.check(&keywardv1.ValidateRequest{Key: r3.GetSecret()}, valid)

		// Deleting ends both at once.
		r4 := regen(id, time.Hour)
		if _, err := f.c.DeleteKey(f.ctx, &keywardv1.DeleteKeyRequest{KeyId: id}); err != nil {
			t.Fatal(err)
		}
		f.check(&keywardv1.ValidateRequest{Key: r3.GetSecret()}, notFound)
		f.check(&keywardv1.ValidateRequest{Key: r4.GetSecret()}, notFound)
	})
}

// grpc-gateway derives a REST PATCH's mask from the body's leaves
// (rate_limit.limit, quota.remaining when a read key is sent back): a
// policy is then replaced whole.
func TestUpdateMaskNamesPolicyLeaves(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	f := newFixture(t, srv)
	c := f.create(&keywardv1.Key{DisplayName: "leaves", Quota: &keywardv1.Quota{Limit: 9}})
	id := c.GetKey().GetKeyId()
	k := f.update(&keywardv1.Key{KeyId: id, RateLimit: &keywardv1.RateLimit{Limit: 7, Period: durationpb.New(time.Minute)}},
		"rate_limit.limit", "rate_limit.period")
	if rl := k.GetRateLimit(); rl.GetLimit() != 7 || rl.GetBurst() != 7 || rl.GetPeriod().AsDuration() != time.Minute {
		t.Fatalf("rate_limit = %v", rl)
	}
	k = f.update(&keywardv1.Key{KeyId: id, Quota: &keywardv1.Quota{Limit: 4, Remaining: 123}}, "quota.limit", "quota.remaining")
	if q := k.GetQuota(); q.GetLimit() != 4 || q.GetRemaining() != 4 {
		t.Fatalf("quota = %v (remaining is output only)", q)
	}
	_, err := f.c.UpdateKey(f.ctx, &keywardv1.UpdateKeyRequest{Key: &keywardv1.Key{KeyId: id},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"metadata.team"}}})
	wantCode(t, err, codes.InvalidArgument, "update_mask")
}
