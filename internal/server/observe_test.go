package server_test

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/server"
	"github.com/keyward/keyward/internal/testserver"
)

var generatedID = regexp.MustCompile(`^[0-9a-f]{32}$`)

// TestRequestIDs: a usable id from the caller is kept, anything else is
// replaced by a generated one; both listeners return it.
func TestRequestIDs(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	for _, c := range []struct {
		name, sent string
		kept       bool
	}{
		{"ok/kept", "req-42:a.b_c", true},
		{"ok/generated", "", false},
		{"replaced/spaces", "two words", false},
		{"replaced/too-long", strings.Repeat("a", 129), false},
	} {
		t.Run("http/"+c.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", srv.BaseURL+"/healthz", nil)
			if c.sent != "" {
				req.Header.Set("X-Request-Id", c.sent)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			checkID(t, resp.Header.Values("X-Request-Id"), c.sent, c.kept)
		})
		t.Run("grpc/"+c.name, func(t *testing.T) {
			ctx := srv.Admin(context.Background())
			if c.sent != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, server.RequestIDHeader, c.sent)
			}
			var hdr metadata.MD
			if _, err := srv.Client.ListKeys(ctx, &keywardv1.ListKeysRequest{}, grpc.Header(&hdr)); err != nil {
				t.Fatal(err)
			}
			checkID(t, hdr.Get(server.RequestIDHeader), c.sent, c.kept)
		})
	}

	// The hot path (Validate, Check) returns an id only if the caller sent one.
	var hdr metadata.MD
	if _, err := srv.Client.Validate(context.Background(), &keywardv1.ValidateRequest{Key: "kw_live_nope"}, grpc.Header(&hdr)); err != nil {
		t.Fatal(err)
	}
	if v := hdr.Get(server.RequestIDHeader); len(v) != 0 {
		t.Errorf("Validate without a request id returned one: %q", v)
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), server.RequestIDHeader, "hot-1")
	if _, err := srv.Client.Validate(ctx, &keywardv1.ValidateRequest{Key: "kw_live_nope"}, grpc.Header(&hdr)); err != nil {
		t.Fatal(err)
	}
	checkID(t, hdr.Get(server.RequestIDHeader), "hot-1", true)

	// REST passes its id on to the gRPC call, whose copy is not returned twice.
	req, _ := http.NewRequest("POST", srv.BaseURL+"/v1/keys:validate", nil)
	req.Header.Set("X-Request-Id", "rest-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	checkID(t, resp.Header.Values("X-Request-Id"), "rest-1", true)
	if v := resp.Header.Values("Grpc-Metadata-X-Request-Id"); len(v) > 0 {
		t.Errorf("the gRPC call's request id is returned again as Grpc-Metadata-X-Request-Id: %q", v)
	}
}

func checkID(t *testing.T, got []string, sent string, kept bool) {
	t.Helper()
	if len(got) != 1 {
		t.Fatalf("request ids returned: %q, want exactly one", got)
	}
	switch {
	case kept && got[0] != sent:
		t.Errorf("request id %q, want the caller's %q", got[0], sent)
	case !kept && !generatedID.MatchString(got[0]):
		t.Errorf("request id %q, want a generated one (32 hex digits)", got[0])
	}
}
