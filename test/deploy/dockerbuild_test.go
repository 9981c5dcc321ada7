package deploy

import (
	"debug/buildinfo"
	"debug/elf"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// goBuildRun is the build stage's `go build` command, expanded.
type goBuildRun struct {
	env    []string // the stage's ARG and ENV values, then inline assignments
	args   []string // after "go"
	output string   // the -o path
}

// goBuild finds the one RUN of the build stage that runs `go build` and
// expands it as the shell in the golang image would.
func goBuild(t *testing.T, st dockerStage) goBuildRun {
	t.Helper()
	var found []goBuildRun
	for _, r := range st.runs {
		words, err := shell.NewLex(st.escape).ProcessWords(strings.Join(r.CmdLine, " "), envGetter(r.vars))
		if err != nil {
			t.Fatalf("RUN %q: %v", r.CmdLine, err)
		}
		run := goBuildRun{}
		for _, k := range sortedKeys(r.vars) {
			run.env = append(run.env, k+"="+r.vars[k])
		}
		for len(words) > 0 && strings.Contains(words[0], "=") {
			run.env = append(run.env, words[0]) // VAR=value go build …
			words = words[1:]
		}
		if len(words) < 2 || words[0] != "go" || words[1] != "build" {
			continue
		}
		run.args = words[1:]
		if i := slices.Index(run.args, "-o"); i > 0 && i+1 < len(run.args) {
			run.output = run.args[i+1]
		}
		found = append(found, run)
	}
	if len(found) != 1 {
		t.Fatalf("build stage: %d RUN go build lines, want 1", len(found))
	}
	return found[0]
}

// TestDockerfileBuild replays the build stage without Docker: the files the
// build context holds (after Dockerfile.dockerignore), the same `go build`
// line with the same environment; then checks the binary is static, as
// distroless/static needs, and runs.
func TestDockerfileBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds keyward from scratch with -trimpath (a minute or two)")
	}
	img := dockerfileImage(t)
	run := goBuild(t, img.build)
	for _, flag := range []string{"-trimpath", "-o"} {
		if !slices.Contains(run.args, flag) {
			t.Errorf("go build %q lacks %s", run.args, flag)
		}
	}
	if !slices.Contains(run.env, "CGO_ENABLED=0") {
		t.Fatalf("the build stage does not set CGO_ENABLED=0: %q", run.env)
	}
	if run.args[len(run.args)-1] != "./cmd/keyward" {
		t.Errorf("go build %q: want ./cmd/keyward last", run.args)
	}

	ctxDir := buildContext(t)
	for _, c := range img.build.Commands {
		if cp, ok := c.(*instructions.CopyCommand); ok && cp.From == "" {
			for _, src := range cp.SourcePaths {
				if _, err := os.Stat(filepath.Join(ctxDir, src)); err != nil {
					t.Errorf("COPY %s: not in the build context: %v", src, err)
				}
			}
		}
	}
	bin := filepath.Join(t.TempDir(), "keyward")
	args := slices.Clone(run.args)
	args[slices.Index(args, "-o")+1] = bin
	cmd := exec.Command("go", args...)
	cmd.Dir = ctxDir
	// GOFLAGS is cleared: the golang image sets none, and a developer's
	// (e.g. -mod=vendor) would change the build.
	cmd.Env = append(append(os.Environ(), "GOFLAGS=", "GOWORK=off"), run.env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s (as in deploy/Dockerfile) in the build context: %v\n%s", strings.Join(args, " "), err, out)
	}

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("the binary is dynamically linked (%v): distroless/static has no libc", p.Type)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary needs %v", libs)
	}
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	if settings["CGO_ENABLED"] != "0" || settings["-trimpath"] != "true" {
		t.Errorf("build settings %v, want CGO_ENABLED=0 and -trimpath", settings)
	}
	out, err := exec.Command(bin, "version").Output()
	if want := img.build.vars["VERSION"]; err != nil || strings.TrimSpace(string(out)) != want {
		t.Errorf("keyward version: %q, %v; want %q (ARG VERSION through -ldflags -X)", out, err, want)
	}
}

// buildContext copies what Docker would send for `docker build -f
// deploy/Dockerfile .`: the repository minus deploy/Dockerfile.dockerignore
// (BuildKit prefers <Dockerfile>.dockerignore to the root .dockerignore).
func buildContext(t *testing.T) string {
	t.Helper()
	root := repoRoot(t)
	f, err := os.Open(filepath.Join(root, "deploy", "Dockerfile.dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	patterns, err := ignorefile.ReadAll(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if rel == "." {
			return nil
		}
		excluded, err := pm.MatchesOrParentMatches(filepath.ToSlash(rel))
		if err != nil {
			return err
		}
		if d.IsDir() {
			if excluded && !reincludes(pm, filepath.ToSlash(rel)) {
				return filepath.SkipDir
			}
			return nil
		}
		if excluded || !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
	if err != nil {
		t.Fatalf("build context: %v", err)
	}
	return dst
}

// reincludes reports whether an exception (!pattern) could bring back a
// file under the excluded directory dir, so the walk must enter it.
func reincludes(pm *patternmatcher.PatternMatcher, dir string) bool {
	for _, p := range pm.Patterns() {
		if !p.Exclusion() {
			continue
		}
		s := p.String()
		if s == dir || strings.HasPrefix(s, dir+"/") || strings.HasPrefix(s, "*") {
			return true
		}
	}
	return false
}
