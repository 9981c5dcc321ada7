package keyservice_test

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/testserver"
)

// Every acknowledged mutation appends exactly one event naming the admin
// key that made it; a refused one appends none.
func TestAuditTrail(t *testing.T) {
	forEachStore(t, func(t *testing.T, srv *testserver.Server) {
		f := newFixture(t, srv)
		events := func(keyID string) []*keywardv1.AuditEvent {
			t.Helper()
			var out []*keywardv1.AuditEvent
			token := ""
			for {
				resp, err := f.c.ListAuditEvents(f.ctx, &keywardv1.ListAuditEventsRequest{KeyId: keyID, PageSize: 2, PageToken: token})
				if err != nil {
					t.Fatalf("ListAuditEvents: %v", err)
				}
				out = append(out, resp.GetAuditEvents()...)
				if token = resp.GetNextPageToken(); token == "" {
					return out
				}
			}
		}
		admin := f.getAdminID()
		c := f.create(&keywardv1.Key{DisplayName: "audited", Scopes: []string{"a"}})
		id := c.GetKey().GetKeyId()
		f.update(&keywardv1.Key{KeyId: id, DisplayName: "audited 2", Scopes: []string{"a", "b"}}, "display_name", "scopes")
		if _, err := f.c.DisableKey(f.ctx, &keywardv1.DisableKeyRequest{KeyId: id}); err != nil {
			t.Fatal(err)
		}
		// Refused writes: a stale etag, bad input.
		_, err := f.c.EnableKey(f.ctx, &keywardv1.EnableKeyRequest{KeyId: id, Etag: "1"})
		wantCode(t, err, codes.Aborted, "")
		_, err = f.c.UpdateKey(f.ctx, &keywardv1.UpdateKeyRequest{Key: &keywardv1.Key{KeyId: id, AllowedCidrs: []string{"x"}},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"allowed_cidrs"}}})
		wantCode(t, err, codes.InvalidArgument, "")
		if _, err := f.c.RegenerateKey(f.ctx, &keywardv1.RegenerateKeyRequest{KeyId: id}); err != nil {
			t.Fatal(err)
		}
		if _, err := f.c.DeleteKey(f.ctx, &keywardv1.DeleteKeyRequest{KeyId: id}); err != nil {
			t.Fatal(err)
		}

		got := events(id)
		want := []string{audit.ActionDelete, audit.ActionRegenerate, audit.ActionDisable, audit.ActionUpdate, audit.ActionCreate}
		if len(got) != len(want) {
			t.Fatalf("%d events for the key, want %d: %v", len(got), len(want), got)
		}
		for i, e := range got {
			if e.GetAction() != want[i] || e.GetActorKeyId() != admin || e.GetKeyId() != id || e.GetSourceAddress() == "" {
				t.Errorf("event %d: %s by %q from %q, want %s by %s", i, e.GetAction(), e.GetActorKeyId(), e.GetSourceAddress(), want[i], admin)
			}
			if i > 0 && got[i-1].GetSequence() <= e.GetSequence() {
				t.Errorf("events not newest first: %d after %d", e.GetSequence(), got[i-1].GetSequence())
			}
		}
		upd := got[3]
		if ch := upd.GetChangedFields(); len(ch) != 2 || ch[0] != "name" || ch[1] != "scopes" {
			t.Errorf("update changed_fields = %v, want [name scopes]", ch)
		}
		if upd.GetBefore().GetDisplayName() != "audited" || upd.GetAfter().GetDisplayName() != "audited 2" {
			t.Errorf("update before/after = %v / %v", upd.GetBefore(), upd.GetAfter())
		}
		if got[0].GetAfter() != nil || got[4].GetBefore() != nil {
			t.Error("a delete has an after, or a create a before")
		}

		// A wrong admin key is recorded, without the key.
		bad := testserver.WithBearer(context.Background(), "not-an-admin-key-at-all-000000")
		_, err = f.c.ListKeys(bad, &keywardv1.ListKeysRequest{})
		wantCode(t, err, codes.Unauthenticated, "")
		all := events("")
		if all[0].GetAction() != audit.ActionSignInFailed || all[0].GetActorKeyId() != "" || all[0].GetSourceAddress() == "" {
			t.Fatalf("newest event %v, want a failed sign-in", all[0])
		}
		// The page token is bound to its filter.
		first, err := f.c.ListAuditEvents(f.ctx, &keywardv1.ListAuditEventsRequest{PageSize: 1})
		if err != nil || first.GetNextPageToken() == "" {
			t.Fatalf("first page: %v %v", first, err)
		}
		_, err = f.c.ListAuditEvents(f.ctx, &keywardv1.ListAuditEventsRequest{KeyId: id, PageToken: first.GetNextPageToken()})
		wantCode(t, err, codes.InvalidArgument, "page_token")
	})
}

// getAdminID finds the admin key's id by searching for its secret.
func (f *fixture) getAdminID() string {
	f.t.Helper()
	resp, err := f.c.ListKeys(f.ctx, &keywardv1.ListKeysRequest{Query: f.srv.AdminKey})
	if err != nil || len(resp.GetKeys()) != 1 {
		f.t.Fatalf("find the admin key: %v %v", resp, err)
	}
	return resp.GetKeys()[0].GetKeyId()
}
