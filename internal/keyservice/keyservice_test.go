package keyservice_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/keymat"
	"github.com/keyward/keyward/internal/testenv"
	"github.com/keyward/keyward/internal/testserver"
)

// Every behaviour runs on both stores, through a real gRPC connection.
func forEachStore(t *testing.T, test func(t *testing.T, srv *testserver.Server)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		test(t, testserver.Start(t, testserver.Options{}))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		test(t, testserver.Start(t, testserver.Options{PostgresDSN: testenv.Postgres(t)}))
	})
}

type fixture struct {
	t   *testing.T
	srv *testserver.Server
	ctx context.Context
	c   keywardv1.KeyServiceClient
}

func newFixture(t *testing.T, srv *testserver.Server) *fixture {
	return &fixture{t: t, srv: srv, ctx: srv.Admin(context.Background()), c: srv.Client}
}

func (f *fixture) create(k *keywardv1.Key) *keywardv1.CreateKeyResponse {
	f.t.Helper()
	resp, err := f.c.CreateKey(f.ctx, &keywardv1.CreateKeyRequest{Key: k})
	if err != nil {
		f.t.Fatalf("CreateKey: %v", err)
	}
	return resp
}

func (f *fixture) validate(secret string) *keywardv1.ValidateResponse {
	f.t.Helper()
	resp, err := f.c.Validate(context.Background(), &keywardv1.ValidateRequest{Key: secret})
	if err != nil {
		f.t.Fatalf("Validate: %v", err)
	}
	return resp
}

func (f *fixture) wantReason(secret string, want keywardv1.ValidateResponse_Reason) {
	f.t.Helper()
	got := f.validate(secret)
	if got.GetReason() != want || got.GetValid() != (want == keywardv1.ValidateResponse_REASON_VALID) {
		f.t.Fatalf("Validate: valid=%v reason=%v, want %v", got.GetValid(), got.GetReason(), want)
	}
	if !got.GetValid() && got.GetKey() != nil {
		f.t.Fatal("a refusal carried the key")
	}
}

func wantCode(t *testing.T, err error, want codes.Code, msgPart string) {
	t.Helper()
	if status.Code(err) != want {
		t.Fatalf("got %v, want %v", err, want)
	}
	if msgPart != "" && !strings.Contains(status.Convert(err).Message(), msgPart) {
		t.Fatalf("message %q does not mention %q", status.Convert(err).Message(), msgPart)
	}
}

func TestCreateAndValidate(t *testing.T) {
	forEachStore(t, func(t *testing.T, srv *testserver.Server) {
		f := newFixture(t, srv)
		created := f.create(&keywardv1.Key{
			DisplayName: "MES line 1", Description: "plant A", Environment: "test",
			Scopes: []string{"orders:read", "orders:write", "orders:read"}, Metadata: map[string]string{"plant": "A"},
		})
		k := created.GetKey()
		if !strings.HasPrefix(created.GetSecret(), "kw_test_") {
			t.Fatalf("secret prefix: %s…", created.GetSecret()[:8])
		}
		if _, err := keymat.Parse(created.GetSecret()); err != nil {
			t.Fatalf("secret does not parse: %v", err)
		}
		if k.GetState() != keywardv1.Key_STATE_ACTIVE || k.GetEnvironment() != "test" || !strings.HasPrefix(k.GetKeyId(), "key_") {
			t.Fatalf("created key: %v", k)
		}
		if strings.Contains(k.GetMaskedKey(), created.GetSecret()[12:40]) || !strings.HasSuffix(created.GetSecret(), k.GetMaskedKey()[len(k.GetMaskedKey())-4:]) {
			t.Fatalf("masked key %q reveals too much or too little", k.GetMaskedKey())
		}
		if got := strings.Join(k.GetScopes(), ","); got != "orders:read,orders:write" {
			t.Fatalf("scopes %q, want duplicates dropped", got)
		}
		v := f.validate(created.GetSecret())
		if !v.GetValid() || v.GetReason() != keywardv1.ValidateResponse_REASON_VALID {
			t.Fatalf("fresh key refused: %v", v)
		}
		vk := v.GetKey()
		if vk.GetKeyId() != k.GetKeyId() || vk.GetDisplayName() != "MES line 1" || vk.GetEnvironment() != "test" ||
			len(vk.GetScopes()) != 2 || vk.GetMetadata()["plant"] != "A" {
			t.Fatalf("Validate returned %v", vk)
		}
		got, err := f.c.GetKey(f.ctx, &keywardv1.GetKeyRequest{KeyId: k.GetKeyId()})
		if err != nil || got.GetKey().GetDisplayName() != "MES line 1" || got.GetKey().GetEtag() != k.GetEtag() {
			t.Fatalf("GetKey: %v %v", got, err)
		}
	})
}

func TestValidateRefusals(t *testing.T) {
	forEachStore(t, func(t *testing.T, srv *testserver.Server) {
		f := newFixture(t, srv)
		unknown, _ := keymat.Generate("live")
		f.wantReason(unknown.String(), keywardv1.ValidateResponse_REASON_NOT_FOUND)
		for _, bad := range []string{"", "hello", unknown.String()[:20], unknown.String() + "x", strings.Repeat("k", 5000)} {
			f.wantReason(bad, keywardv1.ValidateResponse_REASON_MALFORMED)
		}

		t.Run("disabled-then-enabled", func(t *testing.T) {
			c := f.create(&keywardv1.Key{DisplayName: "toggle"})
			if _, err := f.c.DisableKey(f.ctx, &keywardv1.DisableKeyRequest{KeyId: c.GetKey().GetKeyId()}); err != nil {
				t.Fatal(err)
			}
			f.wantReason(c.GetSecret(), keywardv1.ValidateResponse_REASON_DISABLED)
			e, err := f.c.EnableKey(f.ctx, &keywardv1.EnableKeyRequest{KeyId: c.GetKey().GetKeyId()})
			if err != nil || e.GetKey().GetState() != keywardv1.Key_STATE_ACTIVE {
				t.Fatal(err)
			}
			f.wantReason(c.GetSecret(), keywardv1.ValidateResponse_REASON_VALID)
		})
		t.Run("deleted", func(t *testing.T) {
			c := f.create(&keywardv1.Key{DisplayName: "gone"})
			if _, err := f.c.DeleteKey(f.ctx, &keywardv1.DeleteKeyRequest{KeyId: c.GetKey().GetKeyId()}); err != nil {
				t.Fatal(err)
			}
			f.wantReason(c.GetSecret(), keywardv1.ValidateResponse_REASON_NOT_FOUND)
			_, err := f.c.GetKey(f.ctx, &keywardv1.GetKeyRequest{KeyId: c.GetKey().GetKeyId()})
			wantCode(t, err, codes.NotFound, "")
			_, err = f.c.DeleteKey(f.ctx, &keywardv1.DeleteKeyRequest{KeyId: c.GetKey().GetKeyId()})
			wantCode(t, err, codes.NotFound, "")
		})
		t.Run("regenerated", func(t *testing.T) {
			c := f.create(&keywardv1.Key{DisplayName: "rotate"})
			r, err := f.c.RegenerateKey(f.ctx, &keywardv1.RegenerateKeyRequest{KeyId: c.GetKey().GetKeyId()})
			if err != nil {
				t.Fatal(err)
			}
			if r.GetSecret() == c.GetSecret() || r.GetKey().GetMaskedKey() == c.GetKey().GetMaskedKey() {
				t.Fatal("regenerate kept the secret")
			}
			f.wantReason(c.GetSecret(), keywardv1.ValidateResponse_REASON_NOT_FOUND)
			f.wantReason(r.GetSecret(), keywardv1.ValidateResponse_REASON_VALID)
		})
		t.Run("expired", func(t *testing.T) {
			c := f.create(&keywardv1.Key{DisplayName: "short-lived", ExpireTime: timestamppb.New(time.Now().Add(1500 * time.Millisecond))})
			f.wantReason(c.GetSecret(), keywardv1.ValidateResponse_REASON_VALID)
			time.Sleep(1600 * time.Millisecond)
			f.wantReason(c.GetSecret(), keywardv1.ValidateResponse_REASON_EXPIRED)
		})
		t.Run("scope-and-environment", func(t *testing.T) {
			c := f.create(&keywardv1.Key{DisplayName: "scoped", Scopes: []string{"orders:read"}})
			ok, err := f.c.Validate(context.Background(), &keywardv1.ValidateRequest{Key: c.GetSecret(), RequiredScopes: []string{"orders:read"}, Environment: "live"})
			if err != nil || !ok.GetValid() {
				t.Fatalf("%v %v", ok, err)
			}
			no, _ := f.c.Validate(context.Background(), &keywardv1.ValidateRequest{Key: c.GetSecret(), RequiredScopes: []string{"orders:write"}})
			if no.GetValid() || no.GetReason() != keywardv1.ValidateResponse_REASON_INSUFFICIENT_SCOPE {
				t.Fatalf("missing scope: %v", no)
			}
			env, _ := f.c.Validate(context.Background(), &keywardv1.ValidateRequest{Key: c.GetSecret(), Environment: "test"})
			if env.GetValid() || env.GetReason() != keywardv1.ValidateResponse_REASON_WRONG_ENVIRONMENT {
				t.Fatalf("wrong environment: %v", env)
			}
		})
	})
}

func TestUpdate(t *testing.T) {
	forEachStore(t, func(t *testing.T, srv *testserver.Server) {
		f := newFixture(t, srv)
		c := f.create(&keywardv1.Key{DisplayName: "before", Description: "keep me", Scopes: []string{"a"}})
		id := c.GetKey().GetKeyId()
		u, err := f.c.UpdateKey(f.ctx, &keywardv1.UpdateKeyRequest{
			Key:        &keywardv1.Key{KeyId: id, DisplayName: "after", Scopes: []string{"a", "b"}, Description: "ignored"},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"display_name", "scopes"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if u.GetKey().GetDisplayName() != "after" || u.GetKey().GetDescription() != "keep me" || len(u.GetKey().GetScopes()) != 2 {
			t.Fatalf("update applied wrongly: %v", u.GetKey())
		}
		if u.GetKey().GetEtag() == c.GetKey().GetEtag() {
			t.Fatal("etag unchanged by a write")
		}
		// The change is in effect for Validate at once.
		v, _ := f.c.Validate(context.Background(), &keywardv1.ValidateRequest{Key: c.GetSecret(), RequiredScopes: []string{"b"}})
		if !v.GetValid() || v.GetKey().GetDisplayName() != "after" {
			t.Fatalf("Validate after update: %v", v)
		}

		bad := func(name string, req *keywardv1.UpdateKeyRequest, code codes.Code, msg string) {
			t.Run(name, func(t *testing.T) {
				_, err := f.c.UpdateKey(f.ctx, req)
				wantCode(t, err, code, msg)
				got, _ := f.c.GetKey(f.ctx, &keywardv1.GetKeyRequest{KeyId: id})
				if got.GetKey().GetEtag() != u.GetKey().GetEtag() {
					t.Fatal("a refused update wrote something")
				}
			})
		}
		mask := func(p ...string) *fieldmaskpb.FieldMask { return &fieldmaskpb.FieldMask{Paths: p} }
		bad("invalid/unknown-mask-field", &keywardv1.UpdateKeyRequest{Key: &keywardv1.Key{KeyId: id, DisplayName: "x"}, UpdateMask: mask("display_name", "colour")}, codes.InvalidArgument, "colour")
		bad("invalid/empty-name", &keywardv1.UpdateKeyRequest{Key: &keywardv1.Key{KeyId: id}, UpdateMask: mask("display_name")}, codes.InvalidArgument, "display_name")
		bad("invalid/environment-immutable", &keywardv1.UpdateKeyRequest{Key: &keywardv1.Key{KeyId: id, Environment: "test"}, UpdateMask: mask("environment")}, codes.InvalidArgument, "environment")
		bad("invalid/nothing-to-update", &keywardv1.UpdateKeyRequest{Key: &keywardv1.Key{KeyId: id}}, codes.InvalidArgument, "update_mask")
		bad("aborted/stale-etag", &keywardv1.UpdateKeyRequest{Key: &keywardv1.Key{KeyId: id, DisplayName: "x", Etag: c.GetKey().GetEtag()}, UpdateMask: mask("display_name")}, codes.Aborted, "etag")
		bad("not-found/unknown-id", &keywardv1.UpdateKeyRequest{Key: &keywardv1.Key{KeyId: "key_unknown", DisplayName: "x"}, UpdateMask: mask("display_name")}, codes.NotFound, "")
		bad("invalid/past-expiry", &keywardv1.UpdateKeyRequest{Key: &keywardv1.Key{KeyId: id, ExpireTime: timestamppb.New(time.Now().Add(-time.Hour))}, UpdateMask: mask("expire_time")}, codes.InvalidArgument, "expire_time")

		t.Run("ok/clear-expiry-and-output-only-fields-ignored", func(t *testing.T) {
			r, err := f.c.UpdateKey(f.ctx, &keywardv1.UpdateKeyRequest{
				Key:        &keywardv1.Key{KeyId: id, ExpireTime: timestamppb.New(time.Now().Add(time.Hour))},
				UpdateMask: mask("expire_time", "state", "masked_key"),
			})
			if err != nil || r.GetKey().GetExpireTime() == nil || r.GetKey().GetState() != keywardv1.Key_STATE_ACTIVE {
				t.Fatalf("%v %v", r, err)
			}
			r, err = f.c.UpdateKey(f.ctx, &keywardv1.UpdateKeyRequest{Key: &keywardv1.Key{KeyId: id}, UpdateMask: mask("expire_time")})
			if err != nil || r.GetKey().GetExpireTime() != nil {
				t.Fatalf("expiry not cleared: %v %v", r, err)
			}
		})
	})
}

func TestCreateRejectsBadInput(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	f := newFixture(t, srv)
	many := map[string]string{}
	for i := 0; i < 65; i++ {
		many[fmt.Sprintf("k%d", i)] = "v"
	}
	for _, c := range []struct {
		name  string
		key   *keywardv1.Key
		field string
	}{
		{"invalid/no-key", nil, "key"},
		{"invalid/empty-name", &keywardv1.Key{}, "display_name"},
		{"invalid/blank-name", &keywardv1.Key{DisplayName: "   "}, "display_name"},
		{"invalid/long-name", &keywardv1.Key{DisplayName: strings.Repeat("n", 201)}, "display_name"},
		{"invalid/control-chars", &keywardv1.Key{DisplayName: "a\x00b"}, "display_name"},
		{"invalid/environment", &keywardv1.Key{DisplayName: "x", Environment: "prod"}, "environment"},
		{"invalid/scope", &keywardv1.Key{DisplayName: "x", Scopes: []string{"has space"}}, "scopes"},
		{"invalid/too-much-metadata", &keywardv1.Key{DisplayName: "x", Metadata: many}, "metadata"},
		{"invalid/oversized-metadata-value", &keywardv1.Key{DisplayName: "x", Metadata: map[string]string{"a": strings.Repeat("v", 513)}}, "metadata"},
		{"invalid/past-expiry", &keywardv1.Key{DisplayName: "x", ExpireTime: timestamppb.New(time.Now().Add(-time.Second))}, "expire_time"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := f.c.CreateKey(f.ctx, &keywardv1.CreateKeyRequest{Key: c.key})
			wantCode(t, err, codes.InvalidArgument, c.field)
		})
	}
	list, err := f.c.ListKeys(f.ctx, &keywardv1.ListKeysRequest{})
	if err != nil || len(list.GetKeys()) != 1 { // only the bootstrap admin key
		t.Fatalf("refused creates left keys behind: %d %v", len(list.GetKeys()), err)
	}
}

func TestCreateIsIdempotentByRequestID(t *testing.T) {
	forEachStore(t, func(t *testing.T, srv *testserver.Server) {
		f := newFixture(t, srv)
		first, err := f.c.CreateKey(f.ctx, &keywardv1.CreateKeyRequest{Key: &keywardv1.Key{DisplayName: "once"}, RequestId: "req-1"})
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.c.CreateKey(f.ctx, &keywardv1.CreateKeyRequest{Key: &keywardv1.Key{DisplayName: "once"}, RequestId: "req-1"})
		wantCode(t, err, codes.AlreadyExists, first.GetKey().GetKeyId())
		list, _ := f.c.ListKeys(f.ctx, &keywardv1.ListKeysRequest{Query: "once"})
		if len(list.GetKeys()) != 1 {
			t.Fatalf("%d keys named once", len(list.GetKeys()))
		}
	})
}

func TestListSearchAndPaging(t *testing.T) {
	forEachStore(t, func(t *testing.T, srv *testserver.Server) {
		f := newFixture(t, srv)
		mes := f.create(&keywardv1.Key{DisplayName: "MES Line 1"})
		f.create(&keywardv1.Key{DisplayName: "iot-sensor"})
		f.create(&keywardv1.Key{DisplayName: "100%_off"})
		names := func(q string) []string {
			t.Helper()
			resp, err := f.c.ListKeys(f.ctx, &keywardv1.ListKeysRequest{Query: q})
			if err != nil {
				t.Fatalf("ListKeys(%q): %v", q, err)
			}
			var out []string
			for _, k := range resp.GetKeys() {
				out = append(out, k.GetDisplayName())
			}
			return out
		}
		for _, c := range []struct{ query, want string }{
			{"mes line", "MES Line 1"},
			{"SENSOR", "iot-sensor"},
			{"%_", "100%_off"},
			{mes.GetSecret(), "MES Line 1"},
			{mes.GetSecret()[:14], "MES Line 1"},
			{mes.GetSecret()[:30], "MES Line 1"},
			{"nothing-matches", ""},
		} {
			if got := strings.Join(names(c.query), ","); got != c.want {
				t.Errorf("query %.20q… found %q, want %q", c.query, got, c.want)
			}
		}

		// Paging stays exact while keys are added and deleted between pages.
		var ids []string
		for i := 0; i < 7; i++ {
			ids = append(ids, f.create(&keywardv1.Key{DisplayName: fmt.Sprintf("page-%d", i)}).GetKey().GetKeyId())
		}
		seen := map[string]int{}
		token := ""
		for pages := 0; ; pages++ {
			resp, err := f.c.ListKeys(f.ctx, &keywardv1.ListKeysRequest{Query: "page-", PageSize: 3, PageToken: token})
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range resp.GetKeys() {
				seen[k.GetKeyId()]++
			}
			if pages == 0 {
				f.create(&keywardv1.Key{DisplayName: "page-late"})
				if _, err := f.c.DeleteKey(f.ctx, &keywardv1.DeleteKeyRequest{KeyId: ids[6]}); err != nil {
					t.Fatal(err)
				}
			}
			if token = resp.GetNextPageToken(); token == "" {
				break
			}
		}
		for _, id := range ids[:6] {
			if seen[id] != 1 {
				t.Fatalf("key %s seen %d times", id, seen[id])
			}
		}
		if seen[ids[6]] != 0 || len(seen) != 7 {
			t.Fatalf("deleted key listed or late key missing: %v", seen)
		}

		first, _ := f.c.ListKeys(f.ctx, &keywardv1.ListKeysRequest{PageSize: 2})
		_, err := f.c.ListKeys(f.ctx, &keywardv1.ListKeysRequest{PageSize: 2, PageToken: first.GetNextPageToken(), Query: "other"})
		wantCode(t, err, codes.InvalidArgument, "page_token")
		_, err = f.c.ListKeys(f.ctx, &keywardv1.ListKeysRequest{PageToken: "garbage!"})
		wantCode(t, err, codes.InvalidArgument, "page_token")
		_, err = f.c.ListKeys(f.ctx, &keywardv1.ListKeysRequest{PageSize: -1})
		wantCode(t, err, codes.InvalidArgument, "page_size")
		big, err := f.c.ListKeys(f.ctx, &keywardv1.ListKeysRequest{PageSize: 1 << 30})
		if err != nil || len(big.GetKeys()) == 0 {
			t.Fatalf("huge page_size: %v", err)
		}
	})
}

func TestEtagOnStateChanges(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	f := newFixture(t, srv)
	c := f.create(&keywardv1.Key{DisplayName: "etag"})
	_, err := f.c.DisableKey(f.ctx, &keywardv1.DisableKeyRequest{KeyId: c.GetKey().GetKeyId(), Etag: "999"})
	wantCode(t, err, codes.Aborted, "")
	f.wantReason(c.GetSecret(), keywardv1.ValidateResponse_REASON_VALID)
	_, err = f.c.DeleteKey(f.ctx, &keywardv1.DeleteKeyRequest{KeyId: c.GetKey().GetKeyId(), Etag: "999"})
	wantCode(t, err, codes.Aborted, "")
	if _, err := f.c.DisableKey(f.ctx, &keywardv1.DisableKeyRequest{KeyId: c.GetKey().GetKeyId(), Etag: c.GetKey().GetEtag()}); err != nil {
		t.Fatal(err)
	}
}
