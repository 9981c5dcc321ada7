package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/testenv"
)

// runKeyward runs the binary to completion (or until timeout) in a temp dir.
func runKeyward(t *testing.T, timeout time.Duration, args ...string) (stdout, stderr string, exitCode int, took time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, keywardBin, args...)
	cmd.Dir = t.TempDir()
	cmd.Env = serverEnv()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	start := time.Now()
	err := cmd.Run()
	took = time.Since(start)
	if ctx.Err() != nil {
		t.Fatalf("keyward %s did not exit within %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), timeout, &out, &errOut)
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		exitCode = exit.ExitCode()
	default:
		t.Fatalf("run keyward %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errOut.String(), exitCode, took
}

// TestServeFailsClearly: a server that cannot start says why and exits
// non-zero instead of hanging or serving half a service.
func TestServeFailsClearly(t *testing.T) {
	t.Parallel()
	t.Run("postgres unreachable", func(t *testing.T) {
		t.Parallel()
		// Nothing listens on port 1.
		stdout, stderr, code, took := runKeyward(t, 30*time.Second, "serve",
			"--postgres-dsn", "postgres://postgres@127.0.0.1:1/x?sslmode=disable",
			"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--data-dir", t.TempDir())
		if code == 0 {
			t.Errorf("exit code 0, want non-zero\nstdout: %s\nstderr: %s", stdout, stderr)
		}
		if took > 20*time.Second {
			t.Errorf("took %v to give up, want at most 20s", took)
		}
		// The startup log names the store too; the error itself must say it.
		if msg := errorLine(stderr); !strings.Contains(strings.ToLower(msg), "postgres") {
			t.Errorf("the error %q does not mention postgres; stderr:\n%s", msg, stderr)
		}
		if strings.Contains(stderr, "keyward is serving") {
			t.Errorf("claimed to be serving without a store:\n%s", stderr)
		}
	})
	t.Run("bad grpc address", func(t *testing.T) {
		t.Parallel()
		stdout, stderr, code, _ := runKeyward(t, 20*time.Second, "serve",
			"--grpc-addr", "nonsense", "--http-addr", "127.0.0.1:0", "--data-dir", t.TempDir())
		if code == 0 {
			t.Errorf("exit code 0, want non-zero\nstdout: %s\nstderr: %s", stdout, stderr)
		}
		if msg := errorLine(stderr); !strings.Contains(msg, "--grpc-addr") {
			t.Errorf("the error %q does not name --grpc-addr; stderr:\n%s", msg, stderr)
		}
	})
}

// errorLine returns the "keyward: …" line main prints for a failed command.
func errorLine(stderr string) string {
	for _, line := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(line, "keyward: ") {
			return line
		}
	}
	return ""
}

// TestMigrate: `keyward migrate` prepares a fresh Postgres database and is
// idempotent.
func TestMigrate(t *testing.T) {
	t.Parallel()
	dsn := testenv.Postgres(t)
	for i := 1; i <= 2; i++ {
		stdout, stderr, code, _ := runKeyward(t, 60*time.Second, "migrate", "--postgres-dsn", dsn, "--data-dir", t.TempDir())
		if code != 0 {
			t.Fatalf("run %d: keyward migrate exited %d\nstdout: %s\nstderr: %s", i, code, stdout, stderr)
		}
	}
	// The migrated database serves.
	srv := startServer(t, t.TempDir(), dsn)
	srv.createKey(t, `{"displayName": "after migrate"}`)
}

// TestMigrateSQLite: migrate without a DSN creates the embedded store.
func TestMigrateSQLite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for i := 1; i <= 2; i++ {
		stdout, stderr, code, _ := runKeyward(t, 60*time.Second, "migrate", "--data-dir", dir)
		if code != 0 {
			t.Fatalf("run %d: keyward migrate exited %d\nstdout: %s\nstderr: %s", i, code, stdout, stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "keyward.db")); err != nil {
		t.Errorf("no SQLite file after migrate: %v", err)
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	stdout, stderr, code, _ := runKeyward(t, 10*time.Second, "version")
	if code != 0 {
		t.Fatalf("keyward version exited %d: %s", code, stderr)
	}
	if strings.TrimSpace(stdout) == "" {
		t.Errorf("keyward version printed nothing on stdout (stderr: %q)", stderr)
	}
}

// cliRun is one finished run of the binary.
type cliRun struct {
	args           []string
	stdout, stderr string
	code           int
}

// runCLI runs the binary with stdin, the test's environment without
// KEYWARD_* variables, and env on top (a later entry wins).
func runCLI(t *testing.T, stdin string, env []string, args ...string) cliRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, keywardBin, args...)
	cmd.Dir = t.TempDir()
	cmd.Env = append(serverEnv(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("keyward %s did not exit within 30s\nstdout: %s\nstderr: %s", strings.Join(args, " "), &out, &errOut)
	}
	r := cliRun{args: args, stdout: out.String(), stderr: errOut.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	default:
		t.Fatalf("run keyward %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// want asserts the exit code.
func (r cliRun) want(t *testing.T, code int) cliRun {
	t.Helper()
	if r.code != code {
		t.Fatalf("keyward %s: exit code %d, want %d\nstdout: %s\nstderr: %s", strings.Join(r.args, " "), r.code, code, r.stdout, r.stderr)
	}
	return r
}

// decode parses -o json output into m, rejecting unknown fields: the output
// must be the RPC's response message in protojson.
func (r cliRun) decode(t *testing.T, m proto.Message) {
	t.Helper()
	if err := protojson.Unmarshal([]byte(r.stdout), m); err != nil {
		t.Fatalf("keyward %s: output is not a %T in protojson (%v):\n%s", strings.Join(r.args, " "), m, err, r.stdout)
	}
}

// field reads the value of a "name:  value" row of text output.
func (r cliRun) field(t *testing.T, name string) string {
	t.Helper()
	for _, line := range strings.Split(r.stdout, "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("keyward %s: no %q row in:\n%s", strings.Join(r.args, " "), name, r.stdout)
	return ""
}

// keysCLI runs `keyward keys …` against srv as a script would: the server
// from KEYWARD_SERVER and the admin key from KEYWARD_ADMIN_KEY.
type keysCLI struct {
	t   *testing.T
	srv *server
}

func (c keysCLI) run(stdin string, env []string, args ...string) cliRun {
	c.t.Helper()
	base := []string{"KEYWARD_SERVER=" + c.srv.GRPCAddr, "KEYWARD_ADMIN_KEY=" + c.srv.AdminKey}
	return runCLI(c.t, stdin, append(base, env...), append([]string{"keys"}, args...)...)
}

// keys runs a command with no stdin and the default environment.
func (c keysCLI) keys(args ...string) cliRun {
	c.t.Helper()
	return c.run("", nil, args...)
}

// Exit codes documented in `keyward keys -h`.
const (
	exitOK          = 0
	exitUsage       = 2
	exitRefused     = 3
	exitNotFound    = 4
	exitConflict    = 5
	exitUnauthed    = 6
	exitUnavailable = 7
)

// TestKeysCLI drives every `keyward keys` command (the contract's CLI
// client) against a real server, in both output formats, and checks the
// exit codes scripts rely on.
func TestKeysCLI(t *testing.T) {
	t.Parallel()
	// A master key, so that recoverable keys can be revealed; usage counts
	// reach the store within 200 ms.
	master := make([]byte, 32)
	if _, err := rand.Read(master); err != nil {
		t.Fatal(err)
	}
	srv := startServerWith(t, serverOptions{DataDir: t.TempDir(), Args: []string{"--usage-flush-interval", "200ms"},
		Env: []string{"KEYWARD_MASTER_KEY=" + base64.StdEncoding.EncodeToString(master)}})
	c := keysCLI{t: t, srv: srv}

	// create, exactly as the contract spells it, plus the optional fields;
	// the admin key from a file this time.
	var created keywardv1.CreateKeyResponse
	c.run("", []string{"KEYWARD_SERVER=", "KEYWARD_ADMIN_KEY="}, "create", "--name", "cli key", "--description", "from the CLI",
		"--environment", "test", "--scopes", "orders:read,orders:write", "--metadata", "team=a,site=b",
		"--expire-time", "2031-01-02T03:04:05Z", "--server", srv.GRPCAddr,
		"--admin-key-file", filepath.Join(srv.DataDir, "admin.key"), "-o", "json").want(t, exitOK).decode(t, &created)
	k := created.GetKey()
	if k.GetDisplayName() != "cli key" || k.GetDescription() != "from the CLI" || k.GetEnvironment() != "test" ||
		strings.Join(k.GetScopes(), ",") != "orders:read,orders:write" || k.GetMetadata()["team"] != "a" ||
		k.GetExpireTime().AsTime().Format(time.RFC3339) != "2031-01-02T03:04:05Z" ||
		!strings.HasPrefix(created.GetSecret(), "kw_test_") {
		t.Fatalf("created %v", &created)
	}
	id, secret := k.GetKeyId(), created.GetSecret()
	if got := srv.validate(t, secret); got["valid"] != true {
		t.Fatalf("the CLI's key does not validate: %v", got)
	}
	r := c.keys("create", "--name", "cli text key").want(t, exitOK)
	textID, textSecret := r.field(t, "key id"), r.field(t, "secret")
	if !strings.HasPrefix(textSecret, "kw_live_") || r.field(t, "state") != "ACTIVE" || r.field(t, "environment") != "live" {
		t.Fatalf("keys create (text):\n%s", r.stdout)
	}

	// get
	r = c.keys("get", id).want(t, exitOK)
	if r.field(t, "key id") != id || r.field(t, "scopes") != "orders:read,orders:write" ||
		r.field(t, "metadata") != "site=b,team=a" || r.field(t, "expires") != "2031-01-02T03:04:05Z" ||
		r.field(t, "etag") == "" || strings.Contains(r.stdout, secret) {
		t.Fatalf("keys get (text):\n%s", r.stdout)
	}
	var got keywardv1.GetKeyResponse
	c.keys("get", id, "-o", "json").want(t, exitOK).decode(t, &got)
	if got.GetKey().GetKeyId() != id || got.GetKey().GetMaskedKey() == "" {
		t.Fatalf("keys get -o json: %v", &got)
	}

	// list: a table with a header; JSON; pages
	r = c.keys("list").want(t, exitOK)
	if !strings.HasPrefix(r.stdout, "KEY ID") || !strings.Contains(r.stdout, id) || !strings.Contains(r.stdout, textID) ||
		containsAny(r.stdout, secret, textSecret) {
		t.Fatalf("keys list (text):\n%s", r.stdout)
	}
	var page keywardv1.ListKeysResponse
	c.keys("list", "--query", "cli", "-o", "json").want(t, exitOK).decode(t, &page)
	if ids := keyIDs(&page); !ids[id] || !ids[textID] || len(ids) != 2 {
		t.Fatalf("keys list --query cli -o json: %v", &page)
	}
	c.keys("list", "--page-size", "1", "-o", "json").want(t, exitOK).decode(t, &page)
	if len(page.GetKeys()) != 1 || page.GetNextPageToken() == "" {
		t.Fatalf("keys list --page-size 1: %v", &page)
	}
	first := page.GetKeys()[0].GetKeyId()
	c.keys("list", "--page-size", "1", "--page-token", page.GetNextPageToken(), "-o", "json").want(t, exitOK).decode(t, &page)
	if len(page.GetKeys()) != 1 || page.GetKeys()[0].GetKeyId() == first {
		t.Fatalf("keys list --page-token: %v", &page)
	}
	c.keys("list", "--page-size", "1", "--all", "-o", "json").want(t, exitOK).decode(t, &page)
	if ids := keyIDs(&page); len(ids) != 3 || !ids[id] || !ids[textID] || page.GetNextPageToken() != "" { // and the admin key
		t.Fatalf("keys list --all: %v", &page)
	}
	if r = c.keys("list", "--page-size", "1").want(t, exitOK); !strings.Contains(r.stdout, "--page-token ") {
		t.Fatalf("keys list --page-size 1 (text) does not say how to go on:\n%s", r.stdout)
	}

	// search: by name as an argument, by a pasted key on stdin only
	r = c.keys("search", "text key").want(t, exitOK)
	if !strings.Contains(r.stdout, textID) || strings.Contains(r.stdout, id) {
		t.Fatalf("keys search 'text key':\n%s", r.stdout)
	}
	c.run(secret+"\n", nil, "search", "--stdin", "-o", "json").want(t, exitOK).decode(t, &page)
	if ids := keyIDs(&page); len(ids) != 1 || !ids[id] {
		t.Fatalf("keys search --stdin <secret>: %v", &page)
	}
	c.keys("search").want(t, exitUsage)
	c.run("", nil, "search", "--stdin").want(t, exitUsage)

	// update: only the flags given change; an empty value clears
	var upd keywardv1.UpdateKeyResponse
	c.keys("update", id, "--description", "", "-o", "json").want(t, exitOK).decode(t, &upd)
	if u := upd.GetKey(); u.GetDescription() != "" || u.GetDisplayName() != "cli key" || len(u.GetScopes()) != 2 ||
		u.GetExpireTime() == nil || len(u.GetMetadata()) != 2 {
		t.Fatalf("keys update --description '': %v", &upd)
	}
	r = c.keys("update", id, "--name", "renamed", "--scopes", "orders:read", "--metadata", "", "--expire-time", "").want(t, exitOK)
	if r.field(t, "name") != "renamed" || r.field(t, "scopes") != "orders:read" || r.field(t, "metadata") != "" ||
		r.field(t, "expires") != "never" || r.field(t, "description") != "" {
		t.Fatalf("keys update (text):\n%s", r.stdout)
	}
	etag := r.field(t, "etag")
	c.keys("update", id, "--name", "stale", "--etag", etag+"0").want(t, exitConflict)
	r = c.keys("update", id, "--metadata", "team=b", "--etag", etag).want(t, exitOK)
	if r.field(t, "metadata") != "team=b" || r.field(t, "name") != "renamed" {
		t.Fatalf("keys update --etag:\n%s", r.stdout)
	}
	c.keys("update", id).want(t, exitUsage)                                 // nothing to change
	c.keys("update", id, "--expire-time", "tomorrow").want(t, exitUsage)    // not RFC 3339
	c.keys("update", id, "--name", "").want(t, exitUsage)                   // the server's InvalidArgument
	c.keys("update", "key_unknown", "--name", "x").want(t, exitNotFound)    // no such key
	c.keys("update", id, "--metadata", "no-equals-sign").want(t, exitUsage) // not k=v

	// validate: the key from stdin or a file, never argv; no admin key needed
	noAdmin := []string{"KEYWARD_ADMIN_KEY="}
	r = c.run(secret+"\n", noAdmin, "validate").want(t, exitOK)
	if r.field(t, "result") != "valid" || r.field(t, "key id") != id {
		t.Fatalf("keys validate (text):\n%s", r.stdout)
	}
	var v keywardv1.ValidateResponse
	c.run(secret, noAdmin, "validate", "--scopes", "orders:read", "--environment", "test", "--client-ip", "192.0.2.1", "-o", "json").
		want(t, exitOK).decode(t, &v)
	if !v.GetValid() || v.GetKey().GetKeyId() != id {
		t.Fatalf("keys validate -o json: %v", &v)
	}
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.run("", noAdmin, "validate", "--key-file", keyFile).want(t, exitOK)
	r = c.run(secret, noAdmin, "validate", "--scopes", "orders:write").want(t, exitRefused)
	if r.field(t, "result") != "refused" || r.field(t, "reason") != "REASON_INSUFFICIENT_SCOPE" {
		t.Fatalf("keys validate --scopes orders:write:\n%s", r.stdout)
	}
	r = c.run(secret, noAdmin, "validate", "--environment", "live", "-o", "json").want(t, exitRefused)
	var raw map[string]any // a refusal says valid: false, not nothing
	if err := json.Unmarshal([]byte(r.stdout), &raw); err != nil || raw["valid"] != false || raw["reason"] != "REASON_WRONG_ENVIRONMENT" {
		t.Fatalf("keys validate --environment live -o json (%v):\n%s", err, r.stdout)
	}
	if r = c.run("kw_test_notakey\n", noAdmin, "validate").want(t, exitRefused); r.field(t, "reason") != "REASON_MALFORMED" {
		t.Fatalf("keys validate <garbage>:\n%s", r.stdout)
	}
	if r = c.run("", noAdmin, "validate", secret).want(t, exitUsage); strings.Contains(r.stderr, secret) {
		t.Fatalf("keys validate echoed the key from its arguments: %s", r.stderr)
	}
	c.run("", noAdmin, "validate").want(t, exitUsage) // nothing on stdin

	// disable and enable, with etags
	etag = c.keys("get", id).want(t, exitOK).field(t, "etag")
	c.keys("disable", id, "--etag", etag+"0").want(t, exitConflict)
	if r = c.keys("disable", id, "--etag", etag).want(t, exitOK); r.field(t, "state") != "DISABLED" {
		t.Fatalf("keys disable:\n%s", r.stdout)
	}
	if r = c.run(secret, nil, "validate").want(t, exitRefused); r.field(t, "reason") != "REASON_DISABLED" {
		t.Fatalf("keys validate after disable:\n%s", r.stdout)
	}
	var en keywardv1.EnableKeyResponse
	c.keys("enable", id, "-o", "json").want(t, exitOK).decode(t, &en)
	if en.GetKey().GetState() != keywardv1.Key_STATE_ACTIVE {
		t.Fatalf("keys enable -o json: %v", &en)
	}
	c.run(secret, nil, "validate").want(t, exitOK)

	// regenerate: the old secret is refused at once, the new one works
	c.keys("regenerate", id, "--etag", "0").want(t, exitConflict)
	var regen keywardv1.RegenerateKeyResponse
	c.keys("regenerate", id, "-o", "json").want(t, exitOK).decode(t, &regen)
	if regen.GetSecret() == "" || regen.GetSecret() == secret {
		t.Fatalf("keys regenerate -o json: %v", &regen)
	}
	c.run(secret, nil, "validate").want(t, exitRefused)
	c.run(regen.GetSecret(), nil, "validate").want(t, exitOK)
	r = c.keys("regenerate", textID).want(t, exitOK)
	if s := r.field(t, "secret"); s == textSecret || !strings.HasPrefix(s, "kw_live_") {
		t.Fatalf("keys regenerate (text):\n%s", r.stdout)
	}

	// delete
	c.keys("delete", id, "--etag", "0").want(t, exitConflict)
	if r = c.keys("delete", id).want(t, exitOK); !strings.Contains(r.stdout, "deleted") {
		t.Fatalf("keys delete (text): %q", r.stdout)
	}
	if r = c.keys("get", id).want(t, exitNotFound); !strings.Contains(r.stderr, "NotFound") {
		t.Fatalf("keys get of a deleted key: %q", r.stderr)
	}
	c.keys("delete", id).want(t, exitNotFound)
	c.keys("delete", textID, "-o", "json").want(t, exitOK).decode(t, &keywardv1.DeleteKeyResponse{})

	testKeysCLIPolicies(t, c)
	testKeysCLIRecovery(t, c)

	// exit codes of failures before, at and after the server
	c.run("", []string{"KEYWARD_ADMIN_KEY="}, "list").want(t, exitUnauthed)
	c.run("", []string{"KEYWARD_ADMIN_KEY=kw_live_" + strings.Repeat("x", 49)}, "list").want(t, exitUnauthed)
	c.keys("list", "--server", "127.0.0.1:1", "--timeout", "5s").want(t, exitUnavailable) // nothing listens on port 1
	c.keys("frobnicate").want(t, exitUsage)
	c.keys("get").want(t, exitUsage)
	c.keys("list", "-o", "yaml").want(t, exitUsage)
	c.keys("list", "--no-such-flag").want(t, exitUsage)
	c.keys("create").want(t, exitUsage) // no --name: the server's InvalidArgument
	if r = c.keys("-h").want(t, exitOK); !strings.Contains(r.stdout, "exit codes:") {
		t.Fatalf("keys -h does not document the exit codes:\n%s", r.stdout)
	}
}

// testKeysCLIPolicies: create and update with policies, validate against
// them (IP allow-list, rate limit, quota) with the verdict's details in the
// text output, list --unused-days, and usage once the counts are flushed.
func testKeysCLIPolicies(t *testing.T, c keysCLI) {
	t.Helper()
	noAdmin := []string{"KEYWARD_ADMIN_KEY="}

	// create with every policy flag (text)
	before := time.Now()
	r := c.keys("create", "--name", "policy key", "--ttl", "30d", "--allowed-cidrs", "192.0.2.0/24, 2001:db8::/32",
		"--rate-limit", "2/1m", "--burst", "2", "--quota", "5", "--quota-refill", "daily").want(t, exitOK)
	pid, psecret := r.field(t, "key id"), r.field(t, "secret")
	if r.field(t, "allowed cidrs") != "192.0.2.0/24,2001:db8::/32" || r.field(t, "rate limit") != "2/1m, burst 2" ||
		!strings.HasPrefix(r.field(t, "quota"), "5 of 5 left, daily, refills at ") || r.field(t, "recoverable") != "no" ||
		r.field(t, "previous key") != "none" || r.field(t, "last used") != "never" {
		t.Fatalf("keys create with policies (text):\n%s", r.stdout)
	}
	if exp, err := time.Parse(time.RFC3339, r.field(t, "expires")); err != nil ||
		exp.Before(before.Add(30*24*time.Hour-time.Second)) || exp.After(time.Now().Add(30*24*time.Hour)) {
		t.Fatalf("keys create --ttl 30d: expires %q (%v)", r.field(t, "expires"), err)
	}
	// the same in JSON
	var got keywardv1.GetKeyResponse
	c.keys("get", pid, "-o", "json").want(t, exitOK).decode(t, &got)
	if k := got.GetKey(); strings.Join(k.GetAllowedCidrs(), ",") != "192.0.2.0/24,2001:db8::/32" ||
		k.GetRateLimit().GetLimit() != 2 || k.GetRateLimit().GetPeriod().AsDuration() != time.Minute || k.GetRateLimit().GetBurst() != 2 ||
		k.GetQuota().GetLimit() != 5 || k.GetQuota().GetRefill() != keywardv1.Quota_REFILL_DAILY || k.GetRecoverable() {
		t.Fatalf("keys get -o json of the policy key: %v", &got)
	}
	if r = c.keys("list", "--query", "policy key").want(t, exitOK); !strings.Contains(r.stdout, "POLICIES") ||
		!strings.Contains(r.stdout, "ip:192.0.2.0/24+1,rate:2/1m,quota:5/5/day") {
		t.Fatalf("keys list (text) does not sum up the policies:\n%s", r.stdout)
	}
	c.keys("create", "--name", "x", "--ttl", "30d", "--expire-time", "2031-01-01T00:00:00Z").want(t, exitUsage)
	c.keys("create", "--name", "x", "--burst", "5").want(t, exitUsage)
	c.keys("create", "--name", "x", "--rate-limit", "10/2d").want(t, exitUsage) // the server's InvalidArgument: at most a day
	c.keys("create", "--name", "x", "--allowed-cidrs", "10.0.0.1/8").want(t, exitUsage)

	// validate: the allow-list needs --client-ip; then the rate limit (2 a
	// minute) and the quota show in the verdict
	if r = c.run(psecret, noAdmin, "validate").want(t, exitRefused); r.field(t, "reason") != "REASON_IP_NOT_ALLOWED" {
		t.Fatalf("keys validate without --client-ip:\n%s", r.stdout)
	}
	c.run(psecret, noAdmin, "validate", "--client-ip", "198.51.100.1").want(t, exitRefused)
	c.run(psecret, noAdmin, "validate", "--client-ip", "not-an-ip").want(t, exitUsage) // the server's InvalidArgument
	r = c.run(psecret, noAdmin, "validate", "--client-ip", "192.0.2.7").want(t, exitOK)
	if r.field(t, "remaining uses") != "4" || !strings.HasPrefix(r.field(t, "requests left"), "1, limit 2, full again in ") ||
		strings.Contains(r.stdout, "retry after") {
		t.Fatalf("keys validate of the policy key (text):\n%s", r.stdout)
	}
	var v keywardv1.ValidateResponse
	c.run(psecret, noAdmin, "validate", "--client-ip", "2001:db8::1", "-o", "json").want(t, exitOK).decode(t, &v)
	if !v.GetValid() || v.RemainingUses == nil || v.GetRemainingUses() != 3 || v.GetRateLimit().GetLimit() != 2 || v.GetRateLimit().GetRemaining() != 0 {
		t.Fatalf("keys validate of the policy key -o json: %v", &v)
	}
	r = c.run(psecret, noAdmin, "validate", "--client-ip", "192.0.2.7").want(t, exitRefused)
	if r.field(t, "reason") != "REASON_RATE_LIMITED" || r.field(t, "retry after") == "" ||
		!strings.HasPrefix(r.field(t, "requests left"), "0, limit 2, full again in ") {
		t.Fatalf("keys validate over the rate limit (text):\n%s", r.stdout)
	}

	// update: policy flags change only their policy; an empty value clears
	r = c.keys("update", pid, "--rate-limit", "", "--allowed-cidrs", "").want(t, exitOK)
	if r.field(t, "rate limit") != "none" || r.field(t, "allowed cidrs") != "any" || !strings.HasPrefix(r.field(t, "quota"), "3 of 5 left, daily") {
		t.Fatalf("keys update --rate-limit '' --allowed-cidrs '':\n%s", r.stdout)
	}
	var upd keywardv1.UpdateKeyResponse
	c.keys("update", pid, "--quota", "1", "--ttl", "1d", "-o", "json").want(t, exitOK).decode(t, &upd)
	if k := upd.GetKey(); k.GetQuota().GetLimit() != 1 || k.GetQuota().GetRefill() != keywardv1.Quota_REFILL_UNSPECIFIED ||
		k.GetRateLimit() != nil || len(k.GetAllowedCidrs()) != 0 ||
		k.GetExpireTime().AsTime().After(time.Now().Add(24*time.Hour)) || k.GetExpireTime().AsTime().Before(time.Now().Add(23*time.Hour)) {
		t.Fatalf("keys update --quota 1 --ttl 1d -o json: %v", &upd)
	}
	c.keys("update", pid, "--burst", "3").want(t, exitUsage)            // a rate limit is set whole
	c.keys("update", pid, "--quota-refill", "daily").want(t, exitUsage) // so is a quota
	c.keys("update", pid, "--quota", "many").want(t, exitUsage)
	// the quota of 1: one more use, then REASON_USAGE_EXCEEDED
	if r = c.run(psecret, noAdmin, "validate").want(t, exitOK); r.field(t, "remaining uses") != "0" {
		t.Fatalf("keys validate with one use left:\n%s", r.stdout)
	}
	if r = c.run(psecret, noAdmin, "validate").want(t, exitRefused); r.field(t, "reason") != "REASON_USAGE_EXCEEDED" {
		t.Fatalf("keys validate over the quota:\n%s", r.stdout)
	}

	// a rate limit set again (not validated here: the limiter carries the
	// key's exhausted state over to the new limit)
	c.keys("update", pid, "--rate-limit", "100/s", "--burst", "10", "--ttl", "", "-o", "json").want(t, exitOK).decode(t, &upd)
	if k := upd.GetKey(); k.GetRateLimit().GetLimit() != 100 || k.GetRateLimit().GetPeriod().AsDuration() != time.Second ||
		k.GetRateLimit().GetBurst() != 10 || k.GetQuota().GetLimit() != 1 || k.GetExpireTime() != nil {
		t.Fatalf("keys update --rate-limit 100/s --burst 10 --ttl '' -o json: %v", &upd)
	}

	// list --unused-days: every key here is younger than a day
	var page keywardv1.ListKeysResponse
	c.keys("list", "--unused-days", "1", "-o", "json").want(t, exitOK).decode(t, &page)
	if len(page.GetKeys()) != 0 {
		t.Fatalf("keys list --unused-days 1: %v", &page)
	}
	if r = c.keys("list", "--unused-days", "1").want(t, exitOK); !strings.HasPrefix(r.stdout, "KEY ID") ||
		len(strings.Split(strings.TrimSpace(r.stdout), "\n")) != 1 {
		t.Fatalf("keys list --unused-days 1 (text) lists keys:\n%s", r.stdout)
	}
	c.keys("list", "--unused-days", "-1").want(t, exitUsage)
	c.keys("list", "--unused-days", "100000").want(t, exitUsage) // the server's InvalidArgument

	// usage: the verifications above, by outcome, once flushed
	want := map[string]int64{"REASON_IP_NOT_ALLOWED": 2, "REASON_VALID": 3, "REASON_RATE_LIMITED": 1, "REASON_USAGE_EXCEEDED": 1}
	var usage keywardv1.GetKeyUsageResponse
	for deadline := time.Now().Add(15 * time.Second); ; {
		c.keys("usage", pid, "-o", "json").want(t, exitOK).decode(t, &usage)
		if fmt.Sprint(usageCounts(&usage)) == fmt.Sprint(want) && usage.GetLastUsedTime() != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("keys usage -o json: %v, want counts %v and a last use", &usage, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if lu := usage.GetLastUsedTime().AsTime(); lu.Before(before.Add(-time.Second)) || lu.After(time.Now()) {
		t.Fatalf("keys usage: last used %v", lu)
	}
	r = c.keys("usage", pid).want(t, exitOK)
	header := strings.Fields(strings.SplitN(r.stdout, "\n", 2)[0])
	if strings.Join(header, " ") != "HOUR VALID IP_NOT_ALLOWED RATE_LIMITED USAGE_EXCEEDED TOTAL" ||
		r.field(t, "last used") != usage.GetLastUsedTime().AsTime().UTC().Format(time.RFC3339) {
		t.Fatalf("keys usage (text):\n%s", r.stdout)
	}
	if r = c.keys("get", pid).want(t, exitOK); r.field(t, "last used") == "never" {
		t.Fatalf("keys get after validations: last used never:\n%s", r.stdout)
	}
	c.keys("usage", pid, "--since", "2h", "-o", "json").want(t, exitOK).decode(t, &usage)
	if fmt.Sprint(usageCounts(&usage)) != fmt.Sprint(want) {
		t.Fatalf("keys usage --since 2h: %v", &usage)
	}
	hourAgo := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	c.keys("usage", pid, "--start", hourAgo, "--end", time.Now().Add(time.Hour).UTC().Format(time.RFC3339), "-o", "json").want(t, exitOK).decode(t, &usage)
	if fmt.Sprint(usageCounts(&usage)) != fmt.Sprint(want) {
		t.Fatalf("keys usage --start --end: %v", &usage)
	}
	c.keys("usage", pid, "--start", "2001-01-01T00:00:00Z", "--end", "2001-01-02T00:00:00Z", "-o", "json").want(t, exitOK).decode(t, &usage)
	if len(usage.GetBuckets()) != 0 {
		t.Fatalf("keys usage of a day in 2001: %v", &usage)
	}
	c.keys("usage", pid, "--since", "1h", "--start", hourAgo).want(t, exitUsage)
	c.keys("usage", pid, "--start", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)).want(t, exitUsage) // the server's: start after end
	c.keys("usage", pid, "--since", "100d").want(t, exitUsage)                                               // the server's: over 90 days
	c.keys("usage", "key_unknown").want(t, exitNotFound)
	c.keys("usage").want(t, exitUsage)
}

// testKeysCLIRecovery: reveal, regenerate with a grace period, report-leak,
// and the audit trail of it all.
func testKeysCLIRecovery(t *testing.T, c keysCLI) {
	t.Helper()
	noAdmin := []string{"KEYWARD_ADMIN_KEY="}

	// a recoverable key; reveal shows its secret (text and JSON)
	r := c.keys("create", "--name", "recoverable key", "--recoverable").want(t, exitOK)
	rid, rsecret := r.field(t, "key id"), r.field(t, "secret")
	if r.field(t, "recoverable") != "yes" {
		t.Fatalf("keys create --recoverable:\n%s", r.stdout)
	}
	r = c.keys("reveal", rid).want(t, exitOK)
	if r.field(t, "secret") != rsecret || r.field(t, "key id") != rid {
		t.Fatalf("keys reveal (text):\n%s", r.stdout)
	}
	var rev keywardv1.RevealKeyResponse
	c.keys("reveal", rid, "-o", "json").want(t, exitOK).decode(t, &rev)
	if rev.GetSecret() != rsecret || rev.GetKey().GetKeyId() != rid || !rev.GetKey().GetRecoverable() {
		t.Fatalf("keys reveal -o json: %v", &rev)
	}
	// a key that is not recoverable: a failed precondition (5)
	plain := c.keys("create", "--name", "plain key").want(t, exitOK)
	plainID, plainSecret := plain.field(t, "key id"), plain.field(t, "secret")
	if r = c.keys("reveal", plainID).want(t, exitConflict); !strings.Contains(r.stderr, "FailedPrecondition") ||
		strings.Contains(r.stdout+r.stderr, plainSecret) {
		t.Fatalf("keys reveal of a key that is not recoverable: %q", r.stderr)
	}
	c.keys("reveal", "key_unknown").want(t, exitNotFound)
	c.keys("reveal").want(t, exitUsage)

	// regenerate --grace-period: the old secret works on beside the new one
	r = c.keys("regenerate", rid, "--grace-period", "1h").want(t, exitOK)
	newSecret := r.field(t, "secret")
	if prev := r.field(t, "previous key"); !strings.Contains(prev, " until ") || newSecret == rsecret {
		t.Fatalf("keys regenerate --grace-period 1h:\n%s", r.stdout)
	}
	c.run(rsecret, noAdmin, "validate").want(t, exitOK)
	c.run(newSecret, noAdmin, "validate").want(t, exitOK)
	if r = c.keys("list", "--query", "recoverable key").want(t, exitOK); !strings.Contains(r.stdout, "recoverable,prev:") {
		t.Fatalf("keys list (text) of a key in a rotation:\n%s", r.stdout)
	}
	if r = c.keys("reveal", rid).want(t, exitOK); r.field(t, "secret") != newSecret {
		t.Fatalf("keys reveal after regenerate:\n%s", r.stdout)
	}
	c.keys("regenerate", rid, "--grace-period", "8d").want(t, exitUsage) // the server's: at most 7 days
	c.keys("regenerate", rid, "--grace-period", "soon").want(t, exitUsage)

	// report-leak by the secret on stdin: the key is disabled at once
	leakReason := "found in a public gist"
	r = c.run(plainSecret+"\n", nil, "report-leak", "--stdin", "--action", "disable", "--reason", leakReason).want(t, exitOK)
	if r.field(t, "key id") != plainID || r.field(t, "state") != "DISABLED" || strings.Contains(r.stdout, "secret:") {
		t.Fatalf("keys report-leak --stdin --action disable:\n%s", r.stdout)
	}
	if r = c.run(plainSecret, noAdmin, "validate").want(t, exitRefused); r.field(t, "reason") != "REASON_DISABLED" {
		t.Fatalf("keys validate of the leaked key:\n%s", r.stdout)
	}
	// by key id, regenerating: both old secrets stop, the new one works and
	// is what reveal shows
	var leak keywardv1.ReportLeakedKeyResponse
	c.keys("report-leak", "--key-id", rid, "--action", "regenerate", "--reason", "pasted in chat", "-o", "json").want(t, exitOK).decode(t, &leak)
	if leak.GetKey().GetKeyId() != rid || !strings.HasPrefix(leak.GetSecret(), "kw_live_") || leak.GetSecret() == newSecret ||
		leak.GetKey().GetPreviousMaskedKey() != "" {
		t.Fatalf("keys report-leak --action regenerate -o json: %v", &leak)
	}
	c.run(rsecret, noAdmin, "validate").want(t, exitRefused)
	c.run(newSecret, noAdmin, "validate").want(t, exitRefused)
	c.run(leak.GetSecret(), noAdmin, "validate").want(t, exitOK)
	if r = c.keys("reveal", rid, "-o", "json").want(t, exitOK); !strings.Contains(r.stdout, leak.GetSecret()) {
		t.Fatalf("keys reveal after the leak report:\n%s", r.stdout)
	}
	r = c.run(leak.GetSecret()+"\n", nil, "report-leak", "--stdin", "--action", "regenerate", "--reason", "again").want(t, exitOK)
	if s := r.field(t, "secret"); !strings.HasPrefix(s, "kw_live_") || s == leak.GetSecret() {
		t.Fatalf("keys report-leak --action regenerate (text):\n%s", r.stdout)
	}
	// the secret never goes in argv; a wrong one is not found
	if r = c.keys("report-leak", plainSecret, "--action", "disable", "--reason", "r").want(t, exitUsage); strings.Contains(r.stderr, plainSecret) {
		t.Fatalf("keys report-leak echoed the secret from its arguments: %s", r.stderr)
	}
	if r = c.keys("report-leak", "--key-id", plainSecret, "--action", "disable", "--reason", "r").want(t, exitUsage); strings.Contains(r.stderr, plainSecret) {
		t.Fatalf("keys report-leak --key-id <secret> echoed it: %s", r.stderr)
	}
	c.run("kw_live_"+strings.Repeat("z", 49)+"\n", nil, "report-leak", "--stdin", "--action", "disable", "--reason", "r").want(t, exitNotFound)
	c.keys("report-leak", "--key-id", plainID, "--action", "delete", "--reason", "r").want(t, exitUsage)
	c.keys("report-leak", "--key-id", plainID, "--action", "disable").want(t, exitUsage) // no reason

	// audit: the create, the reveals and the leak reports, newest first
	var events keywardv1.ListAuditEventsResponse
	c.keys("audit", "--key-id", rid, "-o", "json").want(t, exitOK).decode(t, &events)
	var actions []string
	for i, e := range events.GetAuditEvents() {
		if e.GetKeyId() != rid || (i > 0 && e.GetSequence() >= events.GetAuditEvents()[i-1].GetSequence()) {
			t.Fatalf("keys audit --key-id: event %d: %v", i, e)
		}
		actions = append(actions, e.GetAction())
	}
	if got := strings.Join(actions, ","); got != "key.leak_reported,key.reveal,key.leak_reported,key.reveal,key.regenerate,key.reveal,key.reveal,key.create" {
		t.Fatalf("keys audit --key-id %s: actions %s", rid, got)
	}
	r = c.keys("audit", "--key-id", rid).want(t, exitOK)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if strings.Join(strings.Fields(lines[0]), " ") != "TIME SEQ ACTION KEY ACTOR SOURCE CHANGED DETAIL" || len(lines) != 1+len(actions) ||
		!strings.Contains(lines[len(lines)-1], "key.create") || !strings.Contains(r.stdout, "key.reveal") || !strings.Contains(r.stdout, "pasted in chat") {
		t.Fatalf("keys audit --key-id (text):\n%s", r.stdout)
	}
	if r = c.keys("audit", "--key-id", plainID).want(t, exitOK); !strings.Contains(r.stdout, leakReason) {
		t.Fatalf("keys audit of the leaked key lacks the reason:\n%s", r.stdout)
	}
	c.keys("audit", "--page-size", "2", "-o", "json").want(t, exitOK).decode(t, &events)
	if len(events.GetAuditEvents()) != 2 || events.GetNextPageToken() == "" {
		t.Fatalf("keys audit --page-size 2: %v", &events)
	}
	if r = c.keys("audit", "--page-size", "2").want(t, exitOK); !strings.Contains(r.stdout, "--page-token ") {
		t.Fatalf("keys audit --page-size 2 (text) does not say how to go on:\n%s", r.stdout)
	}
	next := events.GetNextPageToken()
	c.keys("audit", "--page-size", "2", "--page-token", next, "-o", "json").want(t, exitOK).decode(t, &events)
	if len(events.GetAuditEvents()) != 2 {
		t.Fatalf("keys audit --page-token: %v", &events)
	}
	c.keys("audit", "--page-size", "3", "--all", "-o", "json").want(t, exitOK).decode(t, &events)
	if n := len(events.GetAuditEvents()); n < 20 || events.GetNextPageToken() != "" || events.GetAuditEvents()[n-1].GetSequence() != 1 {
		t.Fatalf("keys audit --all: %d events, last %v, token %q", n, events.GetAuditEvents()[n-1], events.GetNextPageToken())
	}
	c.keys("audit", "--page-token", "garbage").want(t, exitUsage)
	c.keys("audit", "stray").want(t, exitUsage)

	// too many reveals (10 a minute per admin, 6 made above): retry later
	// (7). A slow run may have earned a reveal back meanwhile.
	for i := 0; ; i++ {
		r = c.keys("reveal", rid)
		if r.code == exitUnavailable {
			if !strings.Contains(r.stderr, "ResourceExhausted") || !strings.Contains(r.stderr, "retry in ") || i < 4 {
				t.Fatalf("keys reveal over the limit, after %d more: %q", i, r.stderr)
			}
			break
		}
		if r.want(t, exitOK); i == 10 {
			t.Fatalf("keys reveal: still no ResourceExhausted after %d more reveals", i+1)
		}
	}
}

// usageCounts sums a usage response's buckets by outcome.
func usageCounts(r *keywardv1.GetKeyUsageResponse) map[string]int64 {
	sum := map[string]int64{}
	for _, b := range r.GetBuckets() {
		for reason, n := range b.GetCounts() {
			sum[reason] += n
		}
	}
	return sum
}

func keyIDs(r *keywardv1.ListKeysResponse) map[string]bool {
	ids := map[string]bool{}
	for _, k := range r.GetKeys() {
		ids[k.GetKeyId()] = true
	}
	return ids
}

// TestHealthcheck: `keyward healthcheck`, the distroless image's
// HEALTHCHECK, succeeds against a serving instance, also when given the
// container's wildcard listen address, and fails when nothing answers.
func TestHealthcheck(t *testing.T) {
	t.Parallel()
	srv := startServer(t, t.TempDir(), "")
	_, port, err := net.SplitHostPort(srv.HTTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	if r := runCLI(t, "", nil, "healthcheck", "--http-addr", srv.HTTPAddr).want(t, exitOK); !strings.Contains(r.stdout, "ok") {
		t.Errorf("healthcheck printed %q", r.stdout)
	}
	runCLI(t, "", []string{"KEYWARD_HTTP_ADDR=0.0.0.0:" + port}, "healthcheck").want(t, exitOK)
	runCLI(t, "", nil, "healthcheck", "--http-addr", srv.HTTPAddr, "--path", "/readyz").want(t, exitOK)
	runCLI(t, "", nil, "healthcheck", "--http-addr", srv.HTTPAddr, "--path", "/nope").want(t, 1)
	runCLI(t, "", nil, "healthcheck", "--http-addr", "127.0.0.1:1").want(t, 1)
}
