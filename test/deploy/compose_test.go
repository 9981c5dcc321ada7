package deploy

import (
	"context"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/dotenv"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/keyward/keyward/internal/config"
)

// loadCompose loads deploy/compose.yaml with the Compose specification's
// own loader (schema validation, interpolation, references between
// services, volumes and secrets), with exactly env as the environment.
func loadCompose(t *testing.T, env map[string]string, interpolate bool) (*types.Project, error) {
	t.Helper()
	deploy := filepath.Join(repoRoot(t), "deploy")
	var kv []string
	for k, v := range env {
		kv = append(kv, k+"="+v)
	}
	opts, err := cli.NewProjectOptions([]string{filepath.Join(deploy, "compose.yaml")},
		cli.WithWorkingDirectory(deploy), cli.WithEnv(kv), cli.WithInterpolation(interpolate))
	if err != nil {
		t.Fatal(err)
	}
	return opts.LoadProject(context.Background())
}

// exampleEnv is deploy/compose.env.example, the template of deploy/.env.
func exampleEnv(t *testing.T) map[string]string {
	t.Helper()
	env, err := dotenv.Read(filepath.Join(repoRoot(t), "deploy", "compose.env.example"))
	if err != nil {
		t.Fatalf("compose.env.example: %v", err)
	}
	return env
}

// TestCompose: compose.yaml is a valid Compose file whose services fit
// together and run Keyward with a configuration it accepts.
func TestCompose(t *testing.T) {
	env := exampleEnv(t)
	p, err := loadCompose(t, env, true)
	if err != nil {
		t.Fatalf("docker compose config would fail: %v", err)
	}
	want := []string{"api", "keyward-1", "keyward-2", "migrate", "nginx", "postgres", "redis"}
	if got := p.ServiceNames(); !slices.Equal(sorted(got), want) {
		t.Fatalf("services %v, want %v", got, want)
	}
	root := repoRoot(t)
	image := dockerfileImage(t)
	keyward := map[string]string{"migrate": "migrate", "keyward-1": "serve", "keyward-2": "serve"}
	for name, cmd := range keyward {
		s := p.Services[name]
		if s.Build == nil || filepath.Clean(s.Build.Context) != root || s.Build.Dockerfile != "deploy/Dockerfile" || s.Image != "keyward:dev" {
			t.Errorf("%s: build %+v image %q, want deploy/Dockerfile from the repository root as keyward:dev", name, s.Build, s.Image)
		}
		if strings.Join(s.Command, " ") != cmd {
			t.Errorf("%s: command %q, want %s", name, s.Command, cmd)
		}
		if !s.ReadOnly || !slices.Equal(s.CapDrop, []string{"ALL"}) {
			t.Errorf("%s: want read_only and cap_drop ALL", name)
		}
		// The container's environment: the image's, then compose's.
		cenv := map[string]string{}
		for k, v := range image.env {
			cenv[k] = v
		}
		for k, v := range s.Environment {
			if v != nil {
				cenv[k] = *v
			}
		}
		checkEnvNames(t, "compose service "+name, sortedKeys(cenv))
		if _, err := config.Parse("keyward", nil, func(k string) string { return cenv[k] }); err != nil {
			t.Errorf("%s: keyward refuses this configuration: %v", name, err)
		}
		checkComposeAddrs(t, p, name, cenv)
	}

	// Start order: each dependency can report the condition waited for.
	for name, s := range p.Services {
		for dep, d := range s.DependsOn {
			target := p.Services[dep]
			switch d.Condition {
			case types.ServiceConditionHealthy:
				_, builtHere := keyward[dep] // deploy/Dockerfile has a HEALTHCHECK
				if !builtHere && (target.HealthCheck == nil || target.HealthCheck.Disable) {
					t.Errorf("%s waits for %s to be healthy, but %s has no health check", name, dep, dep)
				}
			case types.ServiceConditionCompletedSuccessfully:
				if target.Restart != "no" && target.Restart != "" {
					t.Errorf("%s waits for %s to complete, but %s restarts (%q)", name, dep, dep, target.Restart)
				}
			}
		}
	}
	for name, deps := range map[string][]string{
		"migrate":   {"postgres"},
		"keyward-1": {"migrate", "redis"},
		"keyward-2": {"migrate", "redis"},
		"nginx":     {"keyward-1", "keyward-2", "api"},
	} {
		if got := sortedKeys(p.Services[name].DependsOn); !slices.Equal(got, sorted(deps)) {
			t.Errorf("%s depends on %v, want %v", name, got, sorted(deps))
		}
	}
	checkComposeNginx(t, p, image)
}

// checkComposeAddrs: the store and cache addresses name services of this
// file, and the DSN matches what the postgres service creates.
func checkComposeAddrs(t *testing.T, p *types.Project, name string, env map[string]string) {
	t.Helper()
	dsn, err := url.Parse(env["KEYWARD_POSTGRES_DSN"])
	if err != nil {
		t.Errorf("%s: KEYWARD_POSTGRES_DSN is not a URL", name)
		return
	}
	pg := p.Services[dsn.Hostname()]
	pass, _ := dsn.User.Password()
	if pg.Image == "" || !strings.HasPrefix(pg.Image, "postgres:") || dsn.Port() != "5432" ||
		dsn.User.Username() != value(pg.Environment["POSTGRES_USER"]) ||
		strings.TrimPrefix(dsn.Path, "/") != value(pg.Environment["POSTGRES_DB"]) ||
		pass != value(pg.Environment["POSTGRES_PASSWORD"]) {
		t.Errorf("%s: KEYWARD_POSTGRES_DSN does not match the postgres service's user, database, password or port", name)
	}
	host, port, err := net.SplitHostPort(env["KEYWARD_REDIS_ADDR"])
	if err != nil || !strings.HasPrefix(p.Services[host].Image, "redis:") || port != "6379" {
		t.Errorf("%s: KEYWARD_REDIS_ADDR=%q is not the redis service", name, env["KEYWARD_REDIS_ADDR"])
	}
}

// TestComposeSecrets: secrets come only from deploy/.env, which git
// ignores; without them compose refuses to start rather than run with a
// default credential.
func TestComposeSecrets(t *testing.T) {
	raw, err := loadCompose(t, exampleEnv(t), false)
	if err != nil {
		t.Fatalf("load without interpolation: %v", err)
	}
	required := regexp.MustCompile(`^\$\{([A-Z_]+):\?[^}]+\}$`)
	secrets := map[string]bool{}
	for name, s := range raw.Services {
		for k, v := range s.Environment {
			if k != "KEYWARD_ADMIN_KEY" && k != "POSTGRES_PASSWORD" {
				continue
			}
			m := required.FindStringSubmatch(value(v))
			if m == nil {
				t.Errorf("%s: %s=%q: want ${VAR:?message}, never a literal", name, k, value(v))
				continue
			}
			secrets[m[1]] = true
		}
	}
	example := exampleEnv(t)
	for name := range secrets {
		if !strings.Contains(example[name], "CHANGE-ME") {
			t.Errorf("compose.env.example: %s=%q, want a CHANGE-ME placeholder", name, example[name])
		}
	}
	if _, err := loadCompose(t, nil, true); err == nil || !strings.Contains(err.Error(), "deploy/.env") {
		t.Errorf("without deploy/.env: %v, want an error naming deploy/.env", err)
	}
	ignore, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", ".gitignore"))
	if err != nil || !slices.Contains(strings.Fields(string(ignore)), "/.env") {
		t.Errorf("deploy/.gitignore must ignore /.env (%v)", err)
	}
}

var (
	nginxUpstreamServer = regexp.MustCompile(`(?m)^\s*server\s+([a-z0-9-]+):(\d+);`)
	nginxListen         = regexp.MustCompile(`(?m)^\s*listen\s+(\d+)`)
)

// checkComposeNginx: nginx's upstreams are services of this file on the
// ports they listen on, and what compose publishes is what nginx serves.
func checkComposeNginx(t *testing.T, p *types.Project, image dockerImage) {
	t.Helper()
	n := p.Services["nginx"]
	var conf string
	for _, v := range n.Volumes {
		if v.Target == "/etc/nginx/conf.d/default.conf" {
			conf = v.Source
		}
	}
	if conf == "" {
		t.Fatal("nginx: no config mounted at /etc/nginx/conf.d/default.conf")
	}
	text := string(readFile(t, conf))
	listens := map[string]bool{}
	for _, m := range nginxListen.FindAllStringSubmatch(text, -1) {
		listens[m[1]] = true
	}
	for _, port := range n.Ports {
		if !listens[port.Published] || strconv.Itoa(int(port.Target)) != port.Published {
			t.Errorf("nginx publishes %s:%d, but nginx.conf listens on %v", port.Published, port.Target, sortedKeys(listens))
		}
	}
	apiPort := ""
	if c := p.Services["api"].Command; len(c) == 2 && c[0] == "--port" {
		apiPort = c[1]
	}
	for _, m := range nginxUpstreamServer.FindAllStringSubmatch(text, -1) {
		host, port := m[1], m[2]
		ok := false
		switch host {
		case "keyward-1", "keyward-2":
			ok = port == image.port("KEYWARD_HTTP_ADDR") || port == image.port("KEYWARD_GRPC_ADDR")
		case "api":
			ok = port == apiPort
		}
		if !ok {
			t.Errorf("nginx.conf: upstream server %s:%s is not a service of compose.yaml listening there", host, port)
		}
	}
}

func value(v *string) string {
	if v == nil {
		return ""
	}
	return *v
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	sort.Strings(out)
	return out
}
