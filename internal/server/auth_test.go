package server_test

import (
	"context"
	"net/http"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/dynamicpb"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/testserver"
)

// TestEveryMethodRequiresAdmin walks the service descriptor, so an RPC added
// later is covered without anyone remembering to add it here.
func TestEveryMethodRequiresAdmin(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	ctx := context.Background()
	plain, err := srv.Client.CreateKey(srv.Admin(ctx), &keywardv1.CreateKeyRequest{Key: &keywardv1.Key{DisplayName: "not an admin", Scopes: []string{"orders:read"}}})
	if err != nil {
		t.Fatal(err)
	}
	disabledAdmin, err := srv.Client.CreateKey(srv.Admin(ctx), &keywardv1.CreateKeyRequest{Key: &keywardv1.Key{DisplayName: "old admin", Scopes: []string{"keyward:admin"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Client.DisableKey(srv.Admin(ctx), &keywardv1.DisableKeyRequest{KeyId: disabledAdmin.GetKey().GetKeyId()}); err != nil {
		t.Fatal(err)
	}

	bearer := func(token string) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	callers := []struct {
		name string
		ctx  context.Context
		want codes.Code
	}{
		{"refused/no-credential", ctx, codes.Unauthenticated},
		{"refused/unknown-key", bearer("kw_live_not-a-real-key-at-all"), codes.Unauthenticated},
		{"refused/wrong-scheme", metadata.AppendToOutgoingContext(ctx, "authorization", "Basic "+srv.AdminKey), codes.Unauthenticated},
		{"refused/disabled-admin", bearer(disabledAdmin.GetSecret()), codes.Unauthenticated},
		{"refused/not-admin", bearer(plain.GetSecret()), codes.PermissionDenied},
	}
	methods := keywardv1.File_keyward_v1_key_service_proto.Services().ByName("KeyService").Methods()
	if methods.Len() < 9 {
		t.Fatalf("descriptor lists %d methods", methods.Len())
	}
	for i := 0; i < methods.Len(); i++ {
		m := methods.Get(i)
		full := "/keyward.v1.KeyService/" + string(m.Name())
		for _, c := range callers {
			t.Run(string(m.Name())+"/"+c.name, func(t *testing.T) {
				err := srv.Conn.Invoke(c.ctx, full, dynamicpb.NewMessage(m.Input()), dynamicpb.NewMessage(m.Output()))
				got := status.Code(err)
				if full == keywardv1.KeyService_Validate_FullMethodName {
					// Validate is public: it answers (an empty key is refused as malformed), never Unauthenticated.
					if err != nil {
						t.Fatalf("Validate without admin: %v", err)
					}
					return
				}
				if got != c.want {
					t.Fatalf("%s as %s: got %v, want %v", full, c.name, err, c.want)
				}
			})
		}
		t.Run(string(m.Name())+"/admin-passes-auth", func(t *testing.T) {
			err := srv.Conn.Invoke(bearer(srv.AdminKey), full, dynamicpb.NewMessage(m.Input()), dynamicpb.NewMessage(m.Output()))
			if c := status.Code(err); c == codes.Unauthenticated || c == codes.PermissionDenied {
				t.Fatalf("admin refused by %s: %v", full, err)
			}
		})
	}
}

func TestRESTAuthStatuses(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	plain, err := srv.Client.CreateKey(srv.Admin(context.Background()), &keywardv1.CreateKeyRequest{Key: &keywardv1.Key{DisplayName: "svc"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, token string
		want        int
	}{
		{"refused/none", "", http.StatusUnauthorized},
		{"refused/unknown", "kw_live_unknown", http.StatusUnauthorized},
		{"refused/not-admin", plain.GetSecret(), http.StatusForbidden},
		{"ok/admin", srv.AdminKey, http.StatusOK},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", srv.BaseURL+"/v1/keys", nil)
			if c.token != "" {
				req.Header.Set("Authorization", "Bearer "+c.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != c.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, c.want)
			}
			if c.want == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
		})
	}
}
