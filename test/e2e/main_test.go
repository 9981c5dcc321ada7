package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/keyward/keyward/internal/testenv"
)

var (
	// keywardBin is the binary built once by TestMain.
	keywardBin string
	// repoRoot is the directory holding go.mod.
	repoRoot string
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	root, err := findRepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	repoRoot = root
	dir, err := os.MkdirTemp("", "keyward-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	keywardBin = filepath.Join(dir, "keyward")
	build := exec.Command("go", "build", "-o", keywardBin, "./cmd/keyward")
	build.Dir = repoRoot
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go build ./cmd/keyward: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

func findRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// toolPath finds an external client the tests drive: on PATH first, then in
// <repo>/.tools/bin (where the Makefile installs grpcurl). A missing tool
// fails the test when CI=true and skips it loudly otherwise.
func toolPath(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	p := filepath.Join(repoRoot, ".tools", "bin", name)
	if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
		return p
	}
	hint := "install it with your package manager"
	if name == "grpcurl" {
		hint = "install it with `GOBIN=" + filepath.Join(repoRoot, ".tools", "bin") +
			" go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4` or `make ci-deps`"
	}
	testenv.Require(t, name, fmt.Errorf("%s is neither on PATH nor in %s; %s", name, filepath.Dir(p), hint))
	return ""
}

// storeMode is one way of running keyward: embedded SQLite or Postgres.
type storeMode struct {
	name string
	// dsn returns the --postgres-dsn to use ("" for SQLite); for Postgres it
	// creates a fresh database, dropped when t ends.
	dsn func(t *testing.T) string
}

var storeModes = []storeMode{
	{name: "sqlite", dsn: func(*testing.T) string { return "" }},
	{name: "postgres", dsn: func(t *testing.T) string { return testenv.Postgres(t) }},
}
