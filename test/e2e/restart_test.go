package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// TestKeysSurviveRestart stops keyward with SIGTERM and starts it again on
// the same data dir (and Postgres database): keys, their secrets, their
// state and the admin key are all still there.
func TestKeysSurviveRestart(t *testing.T) {
	t.Parallel()
	for _, mode := range storeModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			dsn := mode.dsn(t)
			dir := t.TempDir()
			first := startServer(t, dir, dsn)

			active, activeSecret := first.createKey(t, `{"displayName": "survivor", "description": "kept",
				"environment": "test", "scopes": ["orders:read", "orders:write"], "metadata": {"plant": "A"}}`)
			disabled, disabledSecret := first.createKey(t, `{"displayName": "sleeper"}`)
			got := first.call(t, "POST", "/v1/keys/"+keyID(disabled)+":disable", "", true).want(t, http.StatusOK)
			if got["state"] != "STATE_DISABLED" {
				t.Fatalf("disable: state = %v, want STATE_DISABLED", got["state"])
			}
			if r := first.validate(t, activeSecret); r["valid"] != true {
				t.Fatalf("before restart: validate active key: %v", r)
			}
			before := listAll(t, first)
			if len(before) < 3 { // the two keys and the admin key
				t.Fatalf("before restart: listed %d keys, want at least 3: %v", len(before), before)
			}
			keyFile := filepath.Join(dir, "admin.key")
			adminBefore, err := os.ReadFile(keyFile)
			if err != nil {
				t.Fatal(err)
			}

			first.Stop(t)
			second := startServer(t, dir, dsn)

			adminAfter, err := os.ReadFile(keyFile)
			if err != nil {
				t.Fatal(err)
			}
			if string(adminAfter) != string(adminBefore) {
				t.Errorf("admin.key changed across the restart")
			}
			if second.AdminKey != first.AdminKey {
				t.Errorf("the restarted server uses another admin key")
			}
			// listAll authenticates with the admin key: it is still accepted.
			after := listAll(t, second)
			// The one change allowed: the active key's last use, validated
			// before the stop and written by the stop's usage flush.
			if a, ok := after[keyID(active)].(map[string]any); ok {
				if lu, _ := a["lastUsedTime"].(string); lu == "" {
					t.Errorf("after restart: the active key has no lastUsedTime; its validation before the stop was not recorded")
				}
				if b, ok := before[keyID(active)].(map[string]any); ok {
					a["lastUsedTime"] = b["lastUsedTime"]
				}
			}
			if !reflect.DeepEqual(after, before) {
				a, _ := json.MarshalIndent(after, "", "  ")
				b, _ := json.MarshalIndent(before, "", "  ")
				t.Errorf("keys changed across the restart:\nbefore: %s\nafter: %s", b, a)
			}
			for _, k := range []map[string]any{active, disabled} {
				if _, ok := after[keyID(k)]; !ok {
					t.Errorf("key %s (%v) is gone after the restart", keyID(k), k["displayName"])
				}
			}
			if r := second.validate(t, activeSecret); r["valid"] != true || r["reason"] != "REASON_VALID" {
				t.Errorf("after restart: validate active key = %v, want valid", r)
			}
			if r := second.validate(t, disabledSecret); r["valid"] != false || r["reason"] != "REASON_DISABLED" {
				t.Errorf("after restart: validate disabled key = %v, want REASON_DISABLED", r)
			}
			got = second.call(t, "GET", "/v1/keys/"+keyID(disabled), "", true).want(t, http.StatusOK)
			if got["state"] != "STATE_DISABLED" {
				t.Errorf("after restart: disabled key has state %v", got["state"])
			}
			second.Stop(t)
			if logs := first.Log() + second.Log(); containsAny(logs, activeSecret, disabledSecret, first.AdminKey) {
				t.Errorf("a secret appears in the server log")
			}
		})
	}
}

// listAll pages through GET /v1/keys and returns every key by id.
func listAll(t *testing.T, s *server) map[string]any {
	t.Helper()
	out := map[string]any{}
	token := ""
	for range 100 {
		path := "/v1/keys?page_size=2"
		if token != "" {
			path += "&page_token=" + token
		}
		page := s.call(t, "GET", path, "", true).want(t, http.StatusOK)
		keys, ok := page["keys"].([]any)
		if !ok {
			t.Fatalf("GET %s: no \"keys\" array in %v", path, page)
		}
		for _, k := range keys {
			km, _ := k.(map[string]any)
			id := keyID(km)
			if _, dup := out[id]; dup {
				t.Fatalf("GET %s: key %s listed twice", path, id)
			}
			out[id] = km
		}
		token, _ = page["nextPageToken"].(string)
		if token == "" {
			return out
		}
	}
	t.Fatal("listing did not end after 100 pages")
	return nil
}
