package keyservice_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/keymat"
	"github.com/keyward/keyward/internal/testserver"
)

func bySecret(s string) *keywardv1.ReportLeakedKeyRequest_Secret {
	return &keywardv1.ReportLeakedKeyRequest_Secret{Secret: s}
}

func byKeyID(id string) *keywardv1.ReportLeakedKeyRequest_KeyId {
	return &keywardv1.ReportLeakedKeyRequest_KeyId{KeyId: id}
}

const (
	leakDisable    = keywardv1.ReportLeakedKeyRequest_ACTION_DISABLE
	leakRegenerate = keywardv1.ReportLeakedKeyRequest_ACTION_REGENERATE
)

func TestReportLeakedKey(t *testing.T) {
	master, _ := newMasterKey(t)
	forEachStoreWith(t, testserver.Options{MasterKey: master}, func(t *testing.T, srv *testserver.Server) {
		f := newFixture(t, srv)
		report := func(req *keywardv1.ReportLeakedKeyRequest) *keywardv1.ReportLeakedKeyResponse {
			t.Helper()
			resp, err := f.c.ReportLeakedKey(f.ctx, req)
			if err != nil {
				t.Fatalf("ReportLeakedKey: %v", err)
			}
			return resp
		}

		t.Run("ok/disable-by-secret", func(t *testing.T) {
			c := f.create(&keywardv1.Key{DisplayName: "leaked"})
			r := report(&keywardv1.ReportLeakedKeyRequest{Target: bySecret(c.GetSecret()), Action: leakDisable, Reason: "found on a public paste site"})
			if r.GetKey().GetKeyId() != c.GetKey().GetKeyId() || r.GetKey().GetState() != keywardv1.Key_STATE_DISABLED || r.GetSecret() != "" {
				t.Fatalf("response: %v", r)
			}
			f.wantReason(c.GetSecret(), keywardv1.ValidateResponse_REASON_DISABLED)
			e := f.lastEvent(c.GetKey().GetKeyId())
			if e.GetAction() != "key.leak_reported" || e.GetDetail() != "disable: found on a public paste site" ||
				e.GetAfter().GetState() != keywardv1.Key_STATE_DISABLED {
				t.Fatalf("audit event: %v", e)
			}
		})
		t.Run("ok/regenerate-by-key-id", func(t *testing.T) {
			c := f.create(&keywardv1.Key{DisplayName: "leaked"})
			r := report(&keywardv1.ReportLeakedKeyRequest{Target: byKeyID(c.GetKey().GetKeyId()), Action: leakRegenerate})
			if r.GetSecret() == "" || r.GetSecret() == c.GetSecret() || r.GetKey().GetRecoverable() {
				t.Fatalf("response: %v", r.GetKey())
			}
			f.wantReason(c.GetSecret(), keywardv1.ValidateResponse_REASON_NOT_FOUND)
			f.wantReason(r.GetSecret(), keywardv1.ValidateResponse_REASON_VALID)
			if e := f.lastEvent(c.GetKey().GetKeyId()); e.GetAction() != "key.leak_reported" || e.GetDetail() != "regenerate: " {
				t.Fatalf("audit event: %v", e)
			}
		})
		t.Run("ok/reason-quoting-the-secret-is-masked", func(t *testing.T) {
			c := f.create(&keywardv1.Key{DisplayName: "leaked"})
			report(&keywardv1.ReportLeakedKeyRequest{Target: bySecret(c.GetSecret()), Action: leakDisable,
				Reason: "committed as API_KEY=" + c.GetSecret() + " in repo x"})
			want := "disable: committed as API_KEY=" + c.GetKey().GetMaskedKey() + " in repo x"
			if e := f.lastEvent(c.GetKey().GetKeyId()); e.GetDetail() != want {
				t.Fatalf("detail %q, want %q", e.GetDetail(), want)
			}
		})
		t.Run("ok/regenerate-ends-grace-period", func(t *testing.T) {
			c := f.create(&keywardv1.Key{DisplayName: "rotating"})
			regen, err := f.c.RegenerateKey(f.ctx, &keywardv1.RegenerateKeyRequest{KeyId: c.GetKey().GetKeyId(), GracePeriod: durationpb.New(time.Hour)})
			if err != nil {
				t.Fatal(err)
			}
			// The leaked secret is the old one, still in its grace period:
			// found by its hash all the same, and both secrets stop.
			r := report(&keywardv1.ReportLeakedKeyRequest{Target: bySecret(c.GetSecret()), Action: leakRegenerate})
			if r.GetKey().GetKeyId() != c.GetKey().GetKeyId() || r.GetKey().GetPreviousMaskedKey() != "" {
				t.Fatalf("response: %v", r.GetKey())
			}
			f.wantReason(c.GetSecret(), keywardv1.ValidateResponse_REASON_NOT_FOUND)
			f.wantReason(regen.GetSecret(), keywardv1.ValidateResponse_REASON_NOT_FOUND)
			f.wantReason(r.GetSecret(), keywardv1.ValidateResponse_REASON_VALID)
		})
		t.Run("ok/disable-ends-grace-period", func(t *testing.T) {
			c := f.create(&keywardv1.Key{DisplayName: "rotating"})
			if _, err := f.c.RegenerateKey(f.ctx, &keywardv1.RegenerateKeyRequest{KeyId: c.GetKey().GetKeyId(), GracePeriod: durationpb.New(time.Hour)}); err != nil {
				t.Fatal(err)
			}
			report(&keywardv1.ReportLeakedKeyRequest{Target: byKeyID(c.GetKey().GetKeyId()), Action: leakDisable})
			if _, err := f.c.EnableKey(f.ctx, &keywardv1.EnableKeyRequest{KeyId: c.GetKey().GetKeyId()}); err != nil {
				t.Fatal(err)
			}
			f.wantReason(c.GetSecret(), keywardv1.ValidateResponse_REASON_NOT_FOUND) // not brought back by enabling
		})
		t.Run("ok/regenerate-recoverable", func(t *testing.T) {
			c := f.create(&keywardv1.Key{DisplayName: "recoverable", Recoverable: true})
			r := report(&keywardv1.ReportLeakedKeyRequest{Target: bySecret(c.GetSecret()), Action: leakRegenerate})
			if !r.GetKey().GetRecoverable() {
				t.Fatal("regenerating a recoverable key dropped recoverable")
			}
			if got := f.reveal(c.GetKey().GetKeyId()).GetSecret(); got != r.GetSecret() {
				t.Fatal("RevealKey does not return the new secret")
			}
		})
		for _, tc := range []struct {
			name string
			req  *keywardv1.ReportLeakedKeyRequest
			code codes.Code
			msg  string
		}{
			{"refused/no-action", &keywardv1.ReportLeakedKeyRequest{Target: byKeyID("key_x")}, codes.InvalidArgument, "action"},
			{"refused/no-target", &keywardv1.ReportLeakedKeyRequest{Action: leakDisable}, codes.InvalidArgument, "target"},
			{"refused/long-reason", &keywardv1.ReportLeakedKeyRequest{Target: byKeyID("key_x"), Action: leakDisable, Reason: strings.Repeat("x", 2001)}, codes.InvalidArgument, "reason"},
			{"refused/unknown-key-id", &keywardv1.ReportLeakedKeyRequest{Target: byKeyID("key_01JZZZZZZZZZZZZZZZZZZZZZZZ"), Action: leakDisable}, codes.NotFound, ""},
			{"refused/malformed-secret", &keywardv1.ReportLeakedKeyRequest{Target: bySecret("kw_live_not-a-real-secret-at-all"), Action: leakDisable}, codes.NotFound, "no key has this secret"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := f.c.ReportLeakedKey(f.ctx, tc.req)
				wantCode(t, err, tc.code, tc.msg)
			})
		}
		t.Run("refused/unknown-secret", func(t *testing.T) {
			unknown, _ := keymat.Generate("live")
			_, err := f.c.ReportLeakedKey(f.ctx, &keywardv1.ReportLeakedKeyRequest{Target: bySecret(unknown.String()), Action: leakRegenerate})
			wantCode(t, err, codes.NotFound, "no key has this secret")
			if strings.Contains(err.Error(), unknown.String()) || strings.Contains(err.Error(), unknown.String()[8:20]) {
				t.Fatalf("the error repeats the secret: %v", err)
			}
		})
	})
}
