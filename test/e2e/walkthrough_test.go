package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// walkthrough is one README block that must work as written.
type walkthrough struct {
	name  string   // marker name: <!-- walkthrough:NAME -->
	tools []string // clients it runs
}

var walkthroughs = []walkthrough{
	{name: "rest", tools: []string{"curl", "jq"}},
	{name: "grpc", tools: []string{"grpcurl", "jq"}},
}

// TestWalkthroughs runs the README's walk-through blocks verbatim (only the
// addresses and the admin key's path are substituted) against a real
// `keyward serve` on each store, and checks every "# prints: X" comment.
func TestWalkthroughs(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range storeModes {
		for _, wt := range walkthroughs {
			t.Run(mode.name+"/"+wt.name, func(t *testing.T) {
				t.Parallel()
				script := extractWalkthrough(t, string(readme), wt.name)
				expected := expectedPrints(script)
				if len(expected) == 0 {
					t.Fatalf("README walk-through %q has no \"# prints:\" comments: nothing would be checked", wt.name)
				}
				pathDirs := map[string]bool{}
				for _, tool := range wt.tools {
					pathDirs[filepath.Dir(toolPath(t, tool))] = true
				}
				dsn := mode.dsn(t)
				srv := startServer(t, t.TempDir(), dsn)

				script = strings.NewReplacer(
					"localhost:8080", srv.HTTPAddr,
					"localhost:9090", srv.GRPCAddr,
					"keyward-data/admin.key", filepath.Join(srv.DataDir, "admin.key"),
				).Replace(script)
				stdout, stderr, err := runScript(t, script, pathDirs)
				fail := func(format string, args ...any) {
					t.Helper()
					t.Fatalf(format+"\n--- script ---\n%s\n--- stdout ---\n%s\n--- stderr ---\n%s",
						append(args, script, stdout, stderr)...)
				}
				if err != nil {
					fail("walk-through %q failed: %v", wt.name, err)
				}
				if missing, ok := containsInOrder(stdout, expected); !ok {
					fail("walk-through %q: no output line containing %q (expected, in order: %q)", wt.name, missing, expected)
				}
				srv.Stop(t)
			})
		}
	}
}

// extractWalkthrough returns the ```sh block between the markers
// <!-- walkthrough:NAME --> and <!-- /walkthrough:NAME -->.
func extractWalkthrough(t *testing.T, readme, name string) string {
	t.Helper()
	openTag, closeTag := "<!-- walkthrough:"+name+" -->", "<!-- /walkthrough:"+name+" -->"
	start := strings.Index(readme, openTag)
	end := strings.Index(readme, closeTag)
	if start < 0 || end < start {
		t.Fatalf("README.md has no %s … %s section", openTag, closeTag)
	}
	section := strings.TrimSpace(readme[start+len(openTag) : end])
	if !strings.HasPrefix(section, "```sh\n") || !strings.HasSuffix(section, "\n```") {
		t.Fatalf("README.md %s section is not exactly one ```sh block:\n%s", name, section)
	}
	body := strings.TrimSuffix(strings.TrimPrefix(section, "```sh\n"), "```")
	if strings.Contains(body, "```") {
		t.Fatalf("README.md %s section holds more than one code block", name)
	}
	return body
}

var printsComment = regexp.MustCompile(`#\s*prints:\s*(.*?)\s*$`)

// expectedPrints returns the X of every "# prints: X" comment, in order.
func expectedPrints(script string) []string {
	var out []string
	for _, line := range strings.Split(script, "\n") {
		if m := printsComment.FindStringSubmatch(line); m != nil {
			out = append(out, m[1])
		}
	}
	return out
}

// containsInOrder reports whether output has, for each of want in turn, a
// later line containing it; if not, it returns the first one missing.
func containsInOrder(output string, want []string) (missing string, ok bool) {
	lines := strings.Split(output, "\n")
	i := 0
	for _, w := range want {
		for i < len(lines) && !strings.Contains(lines[i], w) {
			i++
		}
		if i == len(lines) {
			return w, false
		}
		i++ // one line satisfies one expectation
	}
	return "", true
}

// runScript runs script with `bash -euo pipefail` in a fresh directory, with
// extraPath prepended to PATH.
func runScript(t *testing.T, script string, extraPath map[string]bool) (stdout, stderr string, err error) {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "walkthrough.sh")
	if err := os.WriteFile(file, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", file)
	cmd.Dir = dir
	path := os.Getenv("PATH")
	for d := range extraPath {
		path = d + string(os.PathListSeparator) + path
	}
	cmd.Env = append(serverEnv(), "PATH="+path)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}
