package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestConfigFile runs the built binary with a YAML config file: a mistake in
// the file stops serve at once, naming the file and line; `keyward config
// print` shows the merged configuration with secrets redacted.
func TestConfigFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("grpc-addr: 127.0.0.1:0\nhttp-addr: 127.0.0.1:0\nredis-address: r1:6379\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, stderr, code, _ := runKeyward(t, 20*time.Second, "serve", "--config", bad, "--data-dir", t.TempDir())
	if code == 0 || !strings.Contains(errorLine(stderr), bad+`:3: unknown key "redis-address" (did you mean "redis-addr"?)`) {
		t.Errorf("fail/unknown-key: exit %d, stderr:\n%s", code, stderr)
	}

	good := filepath.Join(dir, "keyward.yaml")
	if err := os.WriteFile(good, []byte("postgres-dsn: postgres://kw:file-s3cret@db.internal:5432/kw?sslmode=verify-full\nlog-format: json\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code, _ := runKeyward(t, 20*time.Second, "config", "print", "--config", good, "--http-addr", "0.0.0.0:8443")
	if code != 0 {
		t.Fatalf("keyward config print: exit %d\n%s", code, stderr)
	}
	for _, want := range []string{
		"postgres-dsn: postgres://kw:REDACTED@db.internal:5432/kw?sslmode=verify-full # file " + good + ":1\n",
		"log-format: json # file " + good + ":2\n",
		"http-addr: 0.0.0.0:8443 # flag\n",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("keyward config print lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout+stderr, "s3cret") {
		t.Errorf("keyward config print shows the password:\n%s", stdout)
	}
}
