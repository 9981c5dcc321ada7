package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
)

// keyFields are the JSON names of every Key field, as DESIGN.md lists them;
// the server emits unpopulated fields too, so a Key has exactly these.
var keyFields = []string{
	"keyId", "displayName", "description", "environment", "state", "maskedKey", "scopes",
	"metadata", "createTime", "updateTime", "expireTime", "lastUsedTime", "etag",
	"ttl", "allowedCidrs", "rateLimit", "quota", "previousMaskedKey", "previousKeyExpireTime", "recoverable",
}

// TestRESTContract checks the HTTP details a real client depends on: status
// codes, error bodies and JSON field names, on each store.
func TestRESTContract(t *testing.T) {
	t.Parallel()
	for _, mode := range storeModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			testRESTContract(t, startServer(t, t.TempDir(), mode.dsn(t)))
		})
	}
}

func testRESTContract(t *testing.T, s *server) {
	var secrets []string // every secret the server handed out
	create := func(t *testing.T, body string) (map[string]any, string) {
		t.Helper()
		k, secret := s.createKey(t, body)
		secrets = append(secrets, secret)
		return k, secret
	}
	unique := randomName(t)

	t.Run("create returns key and secret", func(t *testing.T) {
		m := s.call(t, "POST", "/v1/keys", `{"displayName": "shape `+unique+`", "scopes": ["a:read"]}`, true).want(t, http.StatusOK)
		assertFields(t, "POST /v1/keys", m, []string{"key", "secret"})
		secret, _ := m["secret"].(string)
		secrets = append(secrets, secret)
		if !strings.HasPrefix(secret, "kw_live_") || len(secret) != len("kw_live_")+49 {
			t.Errorf("secret %q: want kw_live_ and 49 characters", secret)
		}
		key, _ := m["key"].(map[string]any)
		assertFields(t, "POST /v1/keys: key", key, keyFields)
		if key["state"] != "STATE_ACTIVE" || key["environment"] != "live" {
			t.Errorf("new key: state %v, environment %v; want STATE_ACTIVE, live", key["state"], key["environment"])
		}
		masked, _ := key["maskedKey"].(string)
		if !strings.HasPrefix(masked, secret[:len("kw_live_")+6]) || !strings.HasSuffix(masked, secret[len(secret)-4:]) ||
			strings.Contains(masked, secret) {
			t.Errorf("maskedKey %q does not show the start and last four of the secret (and only those)", masked)
		}
	})

	t.Run("unknown field", func(t *testing.T) {
		name := "typo " + unique
		r := s.call(t, "POST", "/v1/keys", `{"displayName": "`+name+`", "colour": "red"}`, true)
		m := r.want(t, http.StatusBadRequest)
		assertError(t, r, m, 3)
		if msg, _ := m["message"].(string); !strings.Contains(msg, "colour") {
			t.Errorf("message %q does not name the unknown field \"colour\"", msg)
		}
		list := s.call(t, "GET", "/v1/keys?query="+url.QueryEscape(name), "", true).want(t, http.StatusOK)
		if keys, _ := list["keys"].([]any); len(keys) != 0 {
			t.Errorf("a refused create still created a key: %v", keys)
		}
	})

	t.Run("malformed JSON", func(t *testing.T) {
		r := s.call(t, "POST", "/v1/keys", `{"displayName": `, true)
		assertError(t, r, r.want(t, http.StatusBadRequest), 3)
	})

	t.Run("get unknown key", func(t *testing.T) {
		r := s.call(t, "GET", "/v1/keys/key_doesnotexist", "", true)
		assertError(t, r, r.want(t, http.StatusNotFound), 5)
	})

	t.Run("bad page token", func(t *testing.T) {
		r := s.call(t, "GET", "/v1/keys?page_token=not-a-token", "", true)
		assertError(t, r, r.want(t, http.StatusBadRequest), 3)
	})

	t.Run("authentication", func(t *testing.T) {
		r := s.call(t, "GET", "/v1/keys", "", false)
		assertError(t, r, r.want(t, http.StatusUnauthorized), 16)
		if h := r.Header.Get("WWW-Authenticate"); !strings.HasPrefix(h, "Bearer") {
			t.Errorf("401 without WWW-Authenticate: Bearer …, got %q", h)
		}
		r = s.callAs(t, "kw_live_not-a-real-key", "GET", "/v1/keys", "")
		assertError(t, r, r.want(t, http.StatusUnauthorized), 16)
		// A valid key without the keyward:admin scope is not an admin.
		_, plain := create(t, `{"displayName": "not admin `+unique+`", "scopes": ["orders:read"]}`)
		r = s.callAs(t, plain, "GET", "/v1/keys", "")
		assertError(t, r, r.want(t, http.StatusForbidden), 7)
	})

	t.Run("get returns a bare Key", func(t *testing.T) {
		k, secret := create(t, `{"displayName": "bare `+unique+`", "description": "d", "scopes": ["x:y"], "metadata": {"m": "n"}}`)
		r := s.call(t, "GET", "/v1/keys/"+keyID(k), "", true)
		got := r.want(t, http.StatusOK)
		assertFields(t, "GET /v1/keys/{id}", got, keyFields)
		if !reflect.DeepEqual(got, k) {
			t.Errorf("GET returned %v, want the created key %v", got, k)
		}
		if strings.Contains(string(r.Body), secret) {
			t.Errorf("GET /v1/keys/{id} returned the secret")
		}
	})

	t.Run("update", func(t *testing.T) {
		k, _ := create(t, `{"displayName": "patch `+unique+`", "description": "d0", "scopes": ["a:read"]}`)
		path := "/v1/keys/" + keyID(k)
		got := s.call(t, "PATCH", path, `{"metadata": {"a": "b"}}`, true).want(t, http.StatusOK)
		assertFields(t, "PATCH "+path, got, keyFields)
		if !reflect.DeepEqual(got["metadata"], map[string]any{"a": "b"}) {
			t.Errorf("metadata = %v, want {a: b}", got["metadata"])
		}
		for _, f := range []string{"displayName", "description", "scopes", "environment", "state", "maskedKey", "createTime"} {
			if !reflect.DeepEqual(got[f], k[f]) {
				t.Errorf("PATCH of metadata only changed %s: %v → %v", f, k[f], got[f])
			}
		}
		if got["etag"] == k["etag"] {
			t.Errorf("etag unchanged (%v) after an update", got["etag"])
		}

		got = s.call(t, "PATCH", path+"?update_mask=description",
			`{"description": "d1", "displayName": "not in the mask"}`, true).want(t, http.StatusOK)
		if got["description"] != "d1" {
			t.Errorf("update_mask=description: description = %v, want d1", got["description"])
		}
		if got["displayName"] != k["displayName"] {
			t.Errorf("update_mask=description also changed displayName to %v", got["displayName"])
		}
		if !reflect.DeepEqual(got["metadata"], map[string]any{"a": "b"}) {
			t.Errorf("update_mask=description changed metadata to %v", got["metadata"])
		}
		stored := s.call(t, "GET", path, "", true).want(t, http.StatusOK)
		if !reflect.DeepEqual(stored, got) {
			t.Errorf("GET after PATCH = %v, want what PATCH returned: %v", stored, got)
		}
	})

	t.Run("disable returns a bare Key", func(t *testing.T) {
		k, secret := create(t, `{"displayName": "disable `+unique+`"}`)
		got := s.call(t, "POST", "/v1/keys/"+keyID(k)+":disable", "", true).want(t, http.StatusOK)
		assertFields(t, "POST /v1/keys/{id}:disable", got, keyFields)
		if got["state"] != "STATE_DISABLED" || keyID(got) != keyID(k) {
			t.Errorf("disable returned %v, want key %s with state STATE_DISABLED", got, keyID(k))
		}
		v := s.validate(t, secret)
		assertRefused(t, v, "REASON_DISABLED")
		got = s.call(t, "POST", "/v1/keys/"+keyID(k)+":enable", "", true).want(t, http.StatusOK)
		if got["state"] != "STATE_ACTIVE" {
			t.Errorf("enable returned state %v", got["state"])
		}
	})

	t.Run("list and paginate", func(t *testing.T) {
		prefix := "page " + unique
		var want []string
		for i := range 3 {
			k, _ := create(t, fmt.Sprintf(`{"displayName": "%s %d"}`, prefix, i))
			want = append(want, keyID(k))
		}
		all := s.call(t, "GET", "/v1/keys?query="+url.QueryEscape(prefix), "", true).want(t, http.StatusOK)
		assertFields(t, "GET /v1/keys", all, []string{"keys", "nextPageToken"})
		if keys, _ := all["keys"].([]any); len(keys) != 3 || all["nextPageToken"] != "" {
			t.Errorf("query %q: %d keys, nextPageToken %q; want 3 and \"\"", prefix, len(keys), all["nextPageToken"])
		}

		var got []string
		token, firstToken := "", ""
		for page := 1; ; page++ {
			if page > 3 {
				t.Fatalf("page_size=1 over 3 keys: a 4th page was announced (token %q)", token)
			}
			path := "/v1/keys?page_size=1&query=" + url.QueryEscape(prefix)
			if token != "" {
				path += "&page_token=" + url.QueryEscape(token)
			}
			m := s.call(t, "GET", path, "", true).want(t, http.StatusOK)
			keys, _ := m["keys"].([]any)
			if len(keys) != 1 {
				t.Fatalf("page %d: %d keys, want 1: %v", page, len(keys), m)
			}
			got = append(got, keyID(keys[0].(map[string]any)))
			token, _ = m["nextPageToken"].(string)
			if page == 1 {
				firstToken = token
			}
			if page < 3 && token == "" {
				t.Fatalf("page %d of 3: empty nextPageToken", page)
			}
			if token == "" {
				break
			}
		}
		sortedGot, sortedWant := slices.Clone(got), slices.Clone(want)
		sort.Strings(sortedGot)
		sort.Strings(sortedWant)
		if !slices.Equal(sortedGot, sortedWant) {
			t.Errorf("pages returned %v, want each of %v once", got, want)
		}
		// A token is tied to its query.
		r := s.call(t, "GET", "/v1/keys?page_size=1&page_token="+url.QueryEscape(firstToken), "", true)
		assertError(t, r, r.want(t, http.StatusBadRequest), 3)
	})

	t.Run("search by secret", func(t *testing.T) {
		var ids, keySecrets []string
		for i := range 3 {
			k, secret := create(t, fmt.Sprintf(`{"displayName": "search %s %d"}`, unique, i))
			ids, keySecrets = append(ids, keyID(k)), append(keySecrets, secret)
		}
		body, _ := json.Marshal(map[string]string{"query": keySecrets[1]})
		m := s.call(t, "POST", "/v1/keys:search", string(body), true).want(t, http.StatusOK)
		assertFields(t, "POST /v1/keys:search", m, []string{"keys", "nextPageToken"})
		keys, _ := m["keys"].([]any)
		if len(keys) != 1 || keyID(keys[0].(map[string]any)) != ids[1] {
			t.Errorf("search by the secret of %s returned %v, want exactly that key", ids[1], keys)
		}
	})

	t.Run("validate", func(t *testing.T) {
		k, secret := create(t, `{"displayName": "validate `+unique+`", "scopes": ["orders:read"]}`)
		v := s.validate(t, secret)
		// remainingUses is optional: present only for a key with a quota.
		assertFields(t, "POST /v1/keys:validate", v, []string{"valid", "reason", "key", "retryAfter", "rateLimit"})
		if v["valid"] != true || v["reason"] != "REASON_VALID" {
			t.Errorf("validate a new key: %v, want valid, REASON_VALID", v)
		}
		if vk, _ := v["key"].(map[string]any); keyID(vk) != keyID(k) {
			t.Errorf("validate: key = %v, want key %s", v["key"], keyID(k))
		}
		// A mistyped secret (last character changed) fails its checksum.
		typo := secret[:len(secret)-1] + map[bool]string{true: "B", false: "A"}[strings.HasSuffix(secret, "A")]
		assertRefused(t, s.validate(t, typo), "REASON_MALFORMED")
		body, _ := json.Marshal(map[string]any{"key": secret, "requiredScopes": []string{"orders:write"}})
		m := s.call(t, "POST", "/v1/keys:validate", string(body), false).want(t, http.StatusOK)
		assertRefused(t, m, "REASON_INSUFFICIENT_SCOPE")
		s.call(t, "DELETE", "/v1/keys/"+keyID(k), "", true).want(t, http.StatusOK)
		assertRefused(t, s.validate(t, secret), "REASON_NOT_FOUND")
	})

	t.Run("openapi", func(t *testing.T) {
		r := s.call(t, "GET", "/openapi.json", "", false)
		m := r.want(t, http.StatusOK)
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("Content-Type %q, want application/json", ct)
		}
		paths, _ := m["paths"].(map[string]any)
		if _, ok := paths["/v1/keys"]; !ok {
			t.Errorf("openapi.json has no paths entry for /v1/keys; paths: %v", keysOf(paths))
		}
	})

	t.Run("probes", func(t *testing.T) {
		s.call(t, "GET", "/healthz", "", false).want(t, http.StatusOK)
		m := s.call(t, "GET", "/readyz", "", false).want(t, http.StatusOK)
		if m["store"] != "ok" {
			t.Errorf("/readyz = %v, want {\"store\": \"ok\"}", m)
		}
	})

	t.Run("no secret in the log", func(t *testing.T) {
		s.Stop(t) // flushes the log
		log := s.Log()
		for i, secret := range append(secrets, s.AdminKey) {
			if strings.Contains(log, secret) {
				t.Errorf("secret #%d appears in the server log", i)
			}
		}
		if len(secrets) < 10 {
			t.Errorf("only %d secrets were checked; the subtests above did not run", len(secrets))
		}
		for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Errorf("--log-format json, but a log line is not JSON: %q", line)
			}
		}
	})
}

// assertFields checks that m has exactly the given top-level fields.
func assertFields(t *testing.T, what string, m map[string]any, want []string) {
	t.Helper()
	got := keysOf(m)
	w := slices.Clone(want)
	sort.Strings(w)
	if !slices.Equal(got, w) {
		t.Errorf("%s: JSON fields %v, want %v", what, got, w)
	}
}

// assertError checks a gateway error body: {code, message, details}.
func assertError(t *testing.T, r response, m map[string]any, code float64) {
	t.Helper()
	if m["code"] != code {
		t.Errorf("%s: error code %v, want %v; body %s", r.desc, m["code"], code, r.Body)
	}
	if msg, _ := m["message"].(string); msg == "" {
		t.Errorf("%s: error without a message: %s", r.desc, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: error Content-Type %q, want application/json", r.desc, ct)
	}
}

// assertRefused checks a Validate answer refusing a key: no key in it.
func assertRefused(t *testing.T, v map[string]any, reason string) {
	t.Helper()
	if v["valid"] != false || v["reason"] != reason {
		t.Errorf("validate: valid %v, reason %v; want false, %s", v["valid"], v["reason"], reason)
	}
	if k, present := v["key"]; present && k != nil {
		t.Errorf("validate refused the key (%v) but returned it: %v", v["reason"], k)
	}
}

func keysOf(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
