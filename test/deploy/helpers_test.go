package deploy

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/config"
)

// repoRoot is the directory holding go.mod.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal(errors.New("no go.mod above the working directory"))
		}
		dir = parent
	}
}

// keywardEnv is every KEYWARD_* variable `keyward serve` reads, asked of the
// real config parser rather than listed here, so a manifest setting a
// misspelt or retired variable (which Keyward would silently ignore) fails.
func keywardEnv(t *testing.T) map[string]bool {
	t.Helper()
	read := map[string]bool{}
	// The error is irrelevant: only which variables were looked up counts.
	_, _ = config.Parse("keyward serve", nil, func(k string) string {
		read[k] = true
		return ""
	})
	if !read["KEYWARD_GRPC_ADDR"] || !read["KEYWARD_ADMIN_KEY"] {
		t.Fatalf("config.Parse read only %v: the probe for variable names is broken", sortedKeys(read))
	}
	return read
}

// pendingEnv are variables the deploy files pass for a feature landing in
// the same release, which config may not read yet. Each must be optional
// where it is set. Once config reads one, the test logs that the entry can
// go.
var pendingEnv = map[string]string{
	"KEYWARD_MASTER_KEY": "the master key of recoverable keys (internal/sealer)",
}

// checkEnvNames fails for every KEYWARD_* name Keyward does not read.
func checkEnvNames(t *testing.T, where string, names []string) {
	t.Helper()
	known := keywardEnv(t)
	for _, n := range names {
		switch why, pending := pendingEnv[n]; {
		case !strings.HasPrefix(n, "KEYWARD_"):
		case pending && known[n]:
			t.Logf("%s is read by config now: pendingEnv can drop it", n)
		case pending:
			t.Logf("%s sets %s (%s), which config does not read yet", where, n, why)
		case !known[n]:
			t.Errorf("%s sets %s, which keyward does not read (it reads %s)", where, n, strings.Join(sortedKeys(known), ", "))
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
