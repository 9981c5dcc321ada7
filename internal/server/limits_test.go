package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/testserver"
)

// TestSizeLimits: oversized headers, bodies and gRPC messages are refused
// before anything parses them.
func TestSizeLimits(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	big := strings.Repeat("x", 1<<20)
	do := func(t *testing.T, req *http.Request) (int, map[string]any) {
		t.Helper()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var m map[string]any
		json.Unmarshal(raw, &m)
		return resp.StatusCode, m
	}
	t.Run("refused/header-1MiB", func(t *testing.T) {
		for _, path := range []string{"/v1/keys:validate", "/v1/auth", "/healthz"} {
			req, _ := http.NewRequest("POST", srv.BaseURL+path, strings.NewReader(`{}`))
			req.Header.Set("X-Padding", big)
			if code, _ := do(t, req); code != http.StatusRequestHeaderFieldsTooLarge {
				t.Errorf("%s with a 1 MiB header: %d, want 431", path, code)
			}
		}
	})
	t.Run("ok/header-16KiB", func(t *testing.T) {
		req, _ := http.NewRequest("GET", srv.BaseURL+"/v1/auth", nil)
		req.Header.Set("Cookie", strings.Repeat("c", 16<<10))
		if code, _ := do(t, req); code != http.StatusUnauthorized {
			t.Errorf("forward-auth with 16 KiB of cookies: %d, want 401 (no key)", code)
		}
	})
	t.Run("refused/body-1MiB", func(t *testing.T) {
		for _, c := range []struct{ path, body string }{
			{"/v1/keys:validate", `{"key": "` + big + `"}`},
			{"/v1/keys:validate", `{"key": "` + strings.Repeat("k", 100<<10) + `"}`}, // 100 KiB: over Validate's 64 KiB
			{"/v1/keys", `{"displayName": "` + big + `"}`},
		} {
			for _, chunked := range []bool{false, true} {
				var body io.Reader = strings.NewReader(c.body)
				if chunked {
					body = io.MultiReader(body) // no length known: sent chunked
				}
				req, _ := http.NewRequest("POST", srv.BaseURL+c.path, body)
				req.Header.Set("Authorization", "Bearer "+srv.AdminKey)
				code, m := do(t, req)
				if code != http.StatusRequestEntityTooLarge || m["code"] != float64(codes.ResourceExhausted) || !strings.Contains(m["message"].(string), "larger than") {
					t.Errorf("POST %s with %d bytes (chunked %v): %d %v; want 413 with a JSON error", c.path, len(c.body), chunked, code, m)
				}
			}
		}
	})
	t.Run("ok/management-body-200KiB", func(t *testing.T) {
		meta := map[string]string{}
		for i := range 64 {
			meta[strings.Repeat(string(rune('a'+i%26)), 1+i/26)] = strings.Repeat("é", 512) // the service's largest metadata
		}
		b, _ := json.Marshal(map[string]any{"displayName": "big", "metadata": meta})
		req, _ := http.NewRequest("POST", srv.BaseURL+"/v1/keys", bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+srv.AdminKey)
		if code, m := do(t, req); code != http.StatusOK {
			t.Errorf("CreateKey with %d bytes of metadata: %d %v, want 200", len(b), code, m)
		}
	})
	t.Run("refused/grpc-message-2MiB", func(t *testing.T) {
		_, err := srv.Client.Validate(context.Background(), &keywardv1.ValidateRequest{Key: strings.Repeat("k", 2<<20)})
		if status.Code(err) != codes.ResourceExhausted {
			t.Errorf("Validate with a 2 MiB key: %v, want RESOURCE_EXHAUSTED", err)
		}
		_, err = srv.Client.CreateKey(srv.Admin(context.Background()), &keywardv1.CreateKeyRequest{Key: &keywardv1.Key{DisplayName: strings.Repeat("n", 2<<20)}})
		if status.Code(err) != codes.ResourceExhausted {
			t.Errorf("CreateKey of 2 MiB: %v, want RESOURCE_EXHAUSTED", err)
		}
	})
}
