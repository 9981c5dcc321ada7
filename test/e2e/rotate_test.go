package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestRotateMasterKey follows docs/recoverable.md: recoverable keys sealed
// under master key A; servers moved to B with A as previous; keyward
// rotate-master-key; then B alone opens every secret and A alone none.
func TestRotateMasterKey(t *testing.T) {
	t.Parallel()
	for _, mode := range storeModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			dsn := mode.dsn(t)
			dir := t.TempDir()
			keyDir := t.TempDir()
			rawA, fileA := writeMasterKey(t, keyDir, "a.key", false)
			rawB, fileB := writeMasterKey(t, keyDir, "b.key", true)
			var logs []string
			var servers []*server
			serve := func(args ...string) *server {
				s := startServerWith(t, serverOptions{DataDir: dir, DSN: dsn, Args: args})
				servers = append(servers, s)
				return s
			}
			rotate := func(wantCode int, args ...string) string {
				t.Helper()
				args = append([]string{"rotate-master-key", "--data-dir", dir}, args...)
				if dsn != "" {
					args = append(args, "--postgres-dsn", dsn)
				}
				stdout, stderr, code, _ := runKeyward(t, 60*time.Second, args...)
				logs = append(logs, stdout, stderr)
				if code != wantCode {
					t.Fatalf("keyward %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, wantCode, stdout, stderr)
				}
				return stdout + stderr
			}
			secrets := map[string]string{} // key id → secret

			// Under A: three recoverable keys and a plain one.
			a := serve("--master-key-file", fileA)
			for _, name := range []string{"one", "two", "three"} {
				k, secret := a.createKey(t, `{"displayName": "`+name+`", "recoverable": true}`)
				if k["recoverable"] != true {
					t.Fatalf("created key: recoverable = %v", k["recoverable"])
				}
				secrets[keyID(k)] = secret
			}
			plain, plainSecret := a.createKey(t, `{"displayName": "plain"}`)
			wantReveal(t, a, secrets)
			a.Stop(t)

			// Step 1: B current, A previous. Old secrets still open; new
			// ones are sealed under B.
			ab := serve("--master-key-file", fileB, "--previous-master-key-files", fileA)
			wantReveal(t, ab, secrets)
			k, secret := ab.createKey(t, `{"displayName": "four", "recoverable": true}`)
			secrets[keyID(k)] = secret
			ab.Stop(t)

			// Without A the three keys under A cannot be re-sealed: exit 1,
			// naming them; nothing else changes.
			out := rotate(1, "--new-key-file", fileB)
			if !strings.Contains(out, "3 keys could not be re-sealed") || !strings.Contains(out, "does not have") {
				t.Fatalf("rotate without the old key:\n%s", out)
			}

			// Step 2.
			out = rotate(0, "--new-key-file", fileB, "--old-key-file", fileA)
			if !strings.Contains(out, "3 re-sealed, 1 already under the new master key") {
				t.Fatalf("rotate:\n%s", out)
			}
			// Idempotent: a second run has nothing to do.
			out = rotate(0, "--new-key-file", fileB, "--old-key-file="+fileA)
			if !strings.Contains(out, "0 re-sealed, 4 already under the new master key") {
				t.Fatalf("rotate again:\n%s", out)
			}

			// Step 3: B alone opens every secret.
			b := serve("--master-key-file", fileB)
			wantReveal(t, b, secrets)
			for id, s := range secrets {
				if r := b.validate(t, s); r["valid"] != true {
					t.Fatalf("key %s no longer validates: %v", id, r)
				}
			}
			for id := range secrets {
				// Each re-seal is in the audit trail, by the command; the reveals follow it.
				m := b.call(t, "GET", "/v1/auditEvents?key_id="+id, "", true).want(t, http.StatusOK)
				events, _ := m["auditEvents"].([]any)
				var actions []string
				for _, e := range events {
					e, _ := e.(map[string]any)
					actions = append(actions, fmt.Sprint(e["action"], " by ", e["actorKeyId"]))
				}
				if id != keyID(k) && !slices.Contains(actions, "key.reseal by rotate-master-key") {
					t.Fatalf("audit events of %s: %v", id, actions)
				}
			}
			r := b.call(t, "POST", "/v1/keys/"+keyID(plain)+":reveal", "{}", true)
			wantStatus(t, r, http.StatusBadRequest, "not recoverable")
			b.Stop(t)

			// A alone opens none of them.
			old := serve("--master-key-file", fileA)
			for id := range secrets {
				r := old.call(t, "POST", "/v1/keys/"+id+":reveal", "{}", true)
				wantStatus(t, r, http.StatusBadRequest, "master key this server does not have")
			}
			old.Stop(t)

			// No server or command output holds a secret or a master key.
			for _, s := range servers {
				logs = append(logs, s.Log())
			}
			all := strings.Join(logs, "\n")
			for _, s := range secrets {
				if containsAny(all, s, plainSecret) {
					t.Fatal("a log contains a secret")
				}
			}
			for _, raw := range [][]byte{rawA, rawB} {
				if containsAny(all, hex.EncodeToString(raw), base64.StdEncoding.EncodeToString(raw)[:40]) {
					t.Fatal("a log contains a master key")
				}
			}
		})
	}
}

// writeMasterKey writes a fresh master key (hex or base64) to dir/name.
func writeMasterKey(t *testing.T, dir, name string, asHex bool) (raw []byte, path string) {
	t.Helper()
	raw = make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	text := base64.StdEncoding.EncodeToString(raw)
	if asHex {
		text = hex.EncodeToString(raw)
	}
	path = filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(text+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return raw, path
}

// wantReveal reveals every key of secrets over REST and compares.
func wantReveal(t *testing.T, s *server, secrets map[string]string) {
	t.Helper()
	for id, want := range secrets {
		m := s.call(t, "POST", "/v1/keys/"+id+":reveal", "{}", true).want(t, http.StatusOK)
		if got, _ := m["secret"].(string); got != want {
			t.Fatalf("reveal %s: got another secret", id)
		}
		if k, _ := m["key"].(map[string]any); keyID(k) != id || k["recoverable"] != true {
			t.Fatalf("reveal %s: key %v", id, k)
		}
	}
}

// wantStatus asserts an error response's status and message.
func wantStatus(t *testing.T, r response, status int, msgPart string) {
	t.Helper()
	if r.Status != status || !strings.Contains(string(r.Body), msgPart) {
		t.Fatalf("%s: %d %s; want %d mentioning %q", r.desc, r.Status, r.Body, status, msgPart)
	}
}
