package deploy

import (
	"bytes"
	"maps"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// dockerImage is what deploy/Dockerfile says, as BuildKit reads it.
type dockerImage struct {
	goVersion string            // the global ARG GO_VERSION's default
	build     dockerStage       // the stage named "build"
	final     dockerStage       // the last stage: the image
	env       map[string]string // the final stage's ENV
}

// dockerStage is one stage with its variables expanded as BuildKit would.
type dockerStage struct {
	instructions.Stage
	base   string            // FROM, expanded
	vars   map[string]string // ARG defaults and ENV at the end of the stage
	runs   []dockerRun
	escape rune
}

// dockerRun is a RUN with the ARG and ENV values defined above it.
type dockerRun struct {
	*instructions.RunCommand
	vars map[string]string
}

func (d dockerImage) port(name string) string {
	_, p, _ := net.SplitHostPort(d.env[name])
	return p
}

// dockerfileImage parses deploy/Dockerfile with BuildKit's parser and the
// linter rules it applies while parsing (those of `docker build --check`
// that need no image metadata). Any warning fails the test.
func dockerfileImage(t *testing.T) dockerImage {
	t.Helper()
	path := filepath.Join(repoRoot(t), "deploy", "Dockerfile")
	res, err := parser.Parse(bytes.NewReader(readFile(t, path)))
	if err != nil {
		t.Fatalf("deploy/Dockerfile: %v", err)
	}
	for _, w := range res.Warnings {
		t.Errorf("deploy/Dockerfile:%d: %s", w.Location.Start.Line, w.Short)
	}
	lint := linter.New(&linter.Config{Warn: func(rule, _, _, msg string, loc []parser.Range) {
		line := 0
		if len(loc) > 0 {
			line = loc[0].Start.Line
		}
		t.Errorf("deploy/Dockerfile:%d: lint %s: %s", line, rule, msg)
	}})
	stages, metaArgs, err := instructions.Parse(res.AST, lint)
	if err != nil {
		t.Fatalf("deploy/Dockerfile: %v", err)
	}
	if len(stages) < 2 {
		t.Fatalf("deploy/Dockerfile: %d stages, want a build stage and a final one", len(stages))
	}
	lex := shell.NewLex(res.EscapeToken)
	global := map[string]string{}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			if kv.Value != nil {
				global[kv.Key] = *kv.Value
			}
		}
	}
	img := dockerImage{goVersion: global["GO_VERSION"]}
	for i, s := range stages {
		st := dockerStage{Stage: s, vars: map[string]string{}, escape: res.EscapeToken}
		st.base = expand(t, lex, s.BaseName, global)
		for _, c := range s.Commands {
			switch c := c.(type) {
			case *instructions.ArgCommand:
				for _, kv := range c.Args {
					switch {
					case kv.Value != nil:
						st.vars[kv.Key] = expand(t, lex, *kv.Value, st.vars)
					default: // ARG NAME inherits the global default
						st.vars[kv.Key] = global[kv.Key]
					}
				}
			case *instructions.EnvCommand:
				for _, kv := range c.Env {
					st.vars[kv.Key] = expand(t, lex, kv.Value, st.vars)
				}
			case *instructions.RunCommand:
				st.runs = append(st.runs, dockerRun{c, maps.Clone(st.vars)})
			}
		}
		if s.Name == "build" {
			img.build = st
		}
		if i == len(stages)-1 {
			img.final = st
			img.env = map[string]string{}
			for _, c := range s.Commands {
				if e, ok := c.(*instructions.EnvCommand); ok {
					for _, kv := range e.Env {
						img.env[kv.Key] = st.vars[kv.Key]
					}
				}
			}
		}
	}
	if img.build.Name == "" {
		t.Fatal("deploy/Dockerfile: no stage named build")
	}
	return img
}

func expand(t *testing.T, lex *shell.Lex, word string, vars map[string]string) string {
	t.Helper()
	out, _, err := lex.ProcessWord(word, envGetter(vars))
	if err != nil {
		t.Fatalf("deploy/Dockerfile: expand %q: %v", word, err)
	}
	return out
}

func envGetter(vars map[string]string) shell.EnvGetter {
	var kv []string
	for k, v := range vars {
		kv = append(kv, k+"="+v)
	}
	return shell.EnvsFromSlice(kv)
}

var goDirective = regexp.MustCompile(`(?m)^go (\S+)$`)

// TestDockerfile checks the image the Dockerfile describes: a Go builder
// of go.mod's version, and a final stage that runs keyward as non-root with
// both listeners reachable and a HEALTHCHECK that works without a shell.
func TestDockerfile(t *testing.T) {
	img := dockerfileImage(t)
	goMod := goDirective.FindSubmatch(readFile(t, filepath.Join(repoRoot(t), "go.mod")))
	if goMod == nil || img.goVersion != string(goMod[1]) {
		t.Errorf("ARG GO_VERSION=%s, but go.mod says go %s", img.goVersion, goMod[1])
	}
	if !strings.HasPrefix(img.build.base, "golang:"+img.goVersion) {
		t.Errorf("build stage FROM %s, want golang:%s", img.build.base, img.goVersion)
	}
	f := img.final
	if !(strings.HasPrefix(f.base, "gcr.io/distroless/static") && strings.HasSuffix(f.base, ":nonroot")) && f.base != "scratch" {
		t.Errorf("final stage FROM %s, want distroless static nonroot or scratch", f.base)
	}

	var (
		user             string
		exposed          []string
		entrypoint, cmd  []string
		health           []string
		copies           = map[string]*instructions.CopyCommand{} // by destination
		binary, buildOut string
	)
	for _, c := range f.Commands {
		switch c := c.(type) {
		case *instructions.UserCommand:
			user = c.User
		case *instructions.ExposeCommand:
			exposed = append(exposed, c.Ports...)
		case *instructions.EntrypointCommand:
			if c.PrependShell {
				t.Errorf("ENTRYPOINT in shell form: the image has no shell")
			}
			entrypoint = c.CmdLine
		case *instructions.CmdCommand:
			if c.PrependShell {
				t.Errorf("CMD in shell form: the image has no shell")
			}
			cmd = c.CmdLine
		case *instructions.HealthCheckCommand:
			health = c.Health.Test
		case *instructions.CopyCommand:
			copies[c.DestPath] = c
		}
	}
	if uid, _, _ := strings.Cut(user, ":"); uid == "" || uid == "0" || uid == "root" {
		t.Errorf("USER %q: the image must not run as root", user)
	}
	if len(entrypoint) != 1 || !slices.Equal(cmd, []string{"serve"}) {
		t.Errorf("ENTRYPOINT %q CMD %q, want the binary alone and serve", entrypoint, cmd)
	} else {
		binary = entrypoint[0]
	}
	if !slices.Equal(health, []string{"CMD", binary, "healthcheck"}) {
		t.Errorf("HEALTHCHECK %q, want [CMD %s healthcheck]: exec form, the binary probing itself", health, binary)
	}
	if cp := copies[binary]; cp == nil || cp.From != "build" || len(cp.SourcePaths) != 1 {
		t.Errorf("the ENTRYPOINT %s is not copied from the build stage", binary)
	} else {
		buildOut = cp.SourcePaths[0]
	}
	if run := goBuild(t, img.build); run.output != buildOut {
		t.Errorf("the build stage writes %s, but the final stage copies %s", run.output, buildOut)
	}
	if cp := copies[img.env["KEYWARD_DATA_DIR"]]; cp == nil || cp.Chown != user {
		t.Errorf("KEYWARD_DATA_DIR=%s is not created owned by USER %s", img.env["KEYWARD_DATA_DIR"], user)
	}

	// Listeners: reachable from outside the container, on the EXPOSEd ports.
	checkEnvNames(t, "deploy/Dockerfile", sortedKeys(img.env))
	var want []string
	for _, name := range []string{"KEYWARD_HTTP_ADDR", "KEYWARD_GRPC_ADDR"} {
		host, port, err := net.SplitHostPort(img.env[name])
		if err != nil || host != "0.0.0.0" {
			t.Errorf("ENV %s=%q, want 0.0.0.0:<port>", name, img.env[name])
		}
		want = append(want, port+"/tcp")
	}
	if !slices.Equal(sorted(exposed), sorted(want)) {
		t.Errorf("EXPOSE %v, want %v (the listeners' ports)", exposed, want)
	}
}
