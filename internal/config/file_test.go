package config

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// writeFile writes content into a file in a fresh temp dir and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPrecedence(t *testing.T) {
	file := writeFile(t, "keyward.yaml", "grpc-addr: 127.0.0.1:1001\nhttp-addr: 127.0.0.1:2001\nnegative-cache-ttl: 7s\nlocal-cache: false\n")
	for _, tc := range []struct {
		name     string
		args     []string
		env      map[string]string
		wantGRPC string
		wantSrc  string
	}{
		{"ok/default", nil, nil, "127.0.0.1:9090", "default"},
		{"ok/file-over-default", []string{"--config", file}, nil, "127.0.0.1:1001", "file " + file + ":1"},
		{"ok/file-from-env", nil, map[string]string{"KEYWARD_CONFIG": file}, "127.0.0.1:1001", "file " + file + ":1"},
		{"ok/env-over-file", []string{"--config", file}, map[string]string{"KEYWARD_GRPC_ADDR": "127.0.0.1:1002"}, "127.0.0.1:1002", "env KEYWARD_GRPC_ADDR"},
		{"ok/flag-over-env-and-file", []string{"--config", file, "--grpc-addr", "127.0.0.1:1003"}, map[string]string{"KEYWARD_GRPC_ADDR": "127.0.0.1:1002"}, "127.0.0.1:1003", "flag"},
		{"ok/empty-env-is-unset", []string{"--config", file}, map[string]string{"KEYWARD_GRPC_ADDR": ""}, "127.0.0.1:1001", "file " + file + ":1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseWith(tc.args, tc.env)
			if err != nil {
				t.Fatal(err)
			}
			if c.GRPCAddr != tc.wantGRPC {
				t.Errorf("grpc-addr = %q, want %q", c.GRPCAddr, tc.wantGRPC)
			}
			if got := c.sources["grpc-addr"].String(); got != tc.wantSrc {
				t.Errorf("source of grpc-addr = %q, want %q", got, tc.wantSrc)
			}
		})
	}

	// Every layer reaches every kind of flag, not just strings.
	c, err := parseWith([]string{"--config", file}, map[string]string{"KEYWARD_LOCAL_CACHE": "true"})
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != "127.0.0.1:2001" || c.NegativeCacheTTL != 7*time.Second || !c.LocalCache {
		t.Errorf("ok/typed-values: http %q ttl %v local-cache %v", c.HTTPAddr, c.NegativeCacheTTL, c.LocalCache)
	}
}

// TestEveryFlagFromFileAndEnv guards the promise that a new flag needs no
// extra work to be configurable: every flag takes a file key and a variable.
func TestEveryFlagFromFileAndEnv(t *testing.T) {
	c, err := parseWith(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	c.flags.VisitAll(func(f *flag.Flag) {
		if f.Name == configFlag {
			return
		}
		n++
		if !strings.Contains(f.Usage, "("+EnvName(f.Name)+")") {
			t.Errorf("--%s: usage does not name its variable %s", f.Name, EnvName(f.Name))
		}
		src, ok := c.sources[f.Name]
		if !ok || src.kind != fromDefault {
			t.Errorf("--%s: source %v, want default", f.Name, src)
		}
	})
	if n < 20 {
		t.Errorf("only %d flags seen", n)
	}
}

func TestConfigFileRefused(t *testing.T) {
	for _, tc := range []struct {
		name, content string
		want          []string
	}{
		{"fail/unknown-key", "grpc-addr: 127.0.0.1:1\n\ngrpc-adr: x\n", []string{":3: unknown key \"grpc-adr\"", `did you mean "grpc-addr"`}},
		{"fail/underscore-key", "postgres_dsn: x\n", []string{":1: unknown key", `did you mean "postgres-dsn"`}},
		{"fail/run-on-key", "redis-address: x\n", []string{":1: unknown key", `did you mean "redis-addr"`}},
		{"fail/camel-case-key", "tlsCertFile: x\n", []string{":1: unknown key", `did you mean "tls-cert-file"`}},
		{"fail/unknown-key-far", "frobnicate: 1\n", []string{":1: unknown key \"frobnicate\"", "names of keyward serve's flags"}},
		{"fail/duplicate", "log-level: info\nlog-level: debug\n", []string{":2:", "already set on line 1"}},
		{"fail/config-in-config", "config: other.yaml\n", []string{":1:", "cannot be set in a config file"}},
		{"fail/admin-key-in-file", "admin-key: kw_live_x\n", []string{":1:", `"admin-key" cannot be set in a config file`, "KEYWARD_ADMIN_KEY"}},
		{"fail/mapping-value", "grpc-addr:\n  host: x\n", []string{":2: grpc-addr:", "not a mapping"}},
		{"fail/not-a-mapping", "- grpc-addr\n", []string{":1: want a mapping"}},
		{"fail/syntax", "grpc-addr: [\n", []string{"yaml:"}},
		{"fail/bad-duration", "negative-cache-ttl: soon\n", []string{":1: negative-cache-ttl:", "want a duration"}},
		{"fail/bad-int", "local-cache-entries: 1e5\n", []string{":1: local-cache-entries:", "want an integer"}},
		{"fail/bad-bool", "auth-strict: yes please\n", []string{":1: auth-strict:", "want true or false"}},
		{"fail/comma-in-list", "environments: [\"a,b\"]\n", []string{":1: environments:", "contains a comma"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, "keyward.yaml", tc.content)
			_, err := parseWith([]string{"--config", p}, nil)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if !strings.Contains(err.Error(), p) {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}

	_, err := parseWith([]string{"--config", filepath.Join(t.TempDir(), "missing.yaml")}, nil)
	if err == nil || !strings.Contains(err.Error(), "--config") || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("fail/missing-file: %v", err)
	}
}

func TestConfigFileValues(t *testing.T) {
	p := writeFile(t, "keyward.yaml", `# comments and blank lines are fine

environments: [live, test, dev]     # a list is joined with commas
auth-headers:
  - X-Token
  - authorization
postgres-dsn: ~                      # null is the empty string
log-level: "debug"
local-cache-entries: 5000
`)
	c, err := parseWith([]string{"--config", p}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Environments, []string{"live", "test", "dev"}) || !slices.Equal(c.AuthHeaders, []string{"x-token", "authorization"}) ||
		c.PostgresDSN != "" || c.LogLevel.String() != "DEBUG" || c.LocalCacheEntries != 5000 {
		t.Errorf("ok/values: %+v", c)
	}
	for _, empty := range []string{"", "# nothing but a comment\n", "---\n"} {
		if _, err := parseWith([]string{"--config", writeFile(t, "empty.yaml", empty)}, nil); err != nil {
			t.Errorf("ok/empty-file %q: %v", empty, err)
		}
	}
}

func TestEnvRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"fail/int", map[string]string{"KEYWARD_LOCAL_CACHE_ENTRIES": "many"}, `KEYWARD_LOCAL_CACHE_ENTRIES="many": want an integer`},
		{"fail/duration", map[string]string{"KEYWARD_NEGATIVE_CACHE_TTL": "5"}, "KEYWARD_NEGATIVE_CACHE_TTL"},
		{"fail/bool", map[string]string{"KEYWARD_LOCAL_CACHE": "yes"}, `KEYWARD_LOCAL_CACHE="yes": want true or false`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseWith(nil, tc.env)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// testPKI writes a self-signed certificate and its key (PEM) into a temp dir.
func testPKI(t *testing.T) (cert, key string) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "keyward"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	cert = writeFile(t, "tls.crt", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	key = writeFile(t, "tls.key", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})))
	return cert, key
}

func TestValidation(t *testing.T) {
	cert, key := testPKI(t)
	notPEM := writeFile(t, "ca.txt", "not a certificate\n")
	_, otherKey := testPKI(t)
	missing := filepath.Join(t.TempDir(), "nope.pem")
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string // "" means valid
	}{
		{"ok/tls", []string{"--tls-cert-file", cert, "--tls-key-file", key}, nil, ""},
		{"ok/mtls", []string{"--tls-cert-file", cert, "--tls-key-file", key, "--grpc-client-ca-file", cert, "--grpc-client-subjects", "orders,spiffe://prod/billing"}, nil, ""},
		{"ok/redis-url", []string{"--redis-addr", "rediss://u:p@r1:6380/2,rediss://u:p@r2:6380/2", "--redis-tls-ca-file", cert}, nil, ""},
		{"ok/redis-sentinel", []string{"--redis-addr", "s1:26379,s2:26379", "--redis-sentinel-master", "mymaster"}, nil, ""},
		{"ok/postgres-keywords", []string{"--postgres-dsn", "host=db user=kw password='a b' sslmode=require"}, nil, ""},
		{"ok/port-zero", []string{"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"}, nil, ""},
		{"fail/addr-no-port", []string{"--grpc-addr", "localhost"}, nil, `--grpc-addr "localhost": want host:port`},
		{"fail/addr-port-range", []string{"--http-addr", ":70000"}, nil, `--http-addr ":70000": port "70000"`},
		{"fail/same-addr", []string{"--grpc-addr", "127.0.0.1:9000", "--http-addr", "127.0.0.1:9000"}, nil, "listeners need different ports"},
		{"fail/ttl-range", []string{"--negative-cache-ttl", "2h"}, nil, "--negative-cache-ttl"},
		{"fail/entries-range", []string{"--local-cache-entries", "0"}, nil, "--local-cache-entries"},
		{"fail/log-level", []string{"--log-level", "loud"}, nil, `--log-level "loud": want debug, info, warn or error`},
		{"fail/cert-without-key", []string{"--tls-cert-file", cert}, nil, "set both"},
		{"fail/key-without-cert", []string{"--tls-key-file", key}, nil, "set both"},
		{"fail/cert-missing", []string{"--tls-cert-file", missing, "--tls-key-file", key}, nil, "--tls-cert-file: open " + missing},
		{"fail/key-does-not-match", []string{"--tls-cert-file", cert, "--tls-key-file", otherKey}, nil, "private key does not match public key"},
		{"fail/cert-not-pem", []string{"--tls-cert-file", notPEM, "--tls-key-file", key}, nil, "--tls-cert-file and --tls-key-file: failed to find any PEM data in certificate input"},
		{"fail/cert-is-dir", []string{"--tls-cert-file", t.TempDir(), "--tls-key-file", key}, nil, "is a directory"},
		{"fail/client-ca-without-tls", []string{"--grpc-client-ca-file", cert}, nil, "client certificates need TLS"},
		{"fail/client-ca-not-pem", []string{"--tls-cert-file", cert, "--tls-key-file", key, "--grpc-client-ca-file", notPEM}, nil, "holds no PEM certificate"},
		{"fail/subjects-without-ca", []string{"--tls-cert-file", cert, "--tls-key-file", key, "--grpc-client-subjects", "orders"}, nil, "--grpc-client-subjects: needs --grpc-client-ca-file"},
		{"fail/sentinel-without-redis", []string{"--redis-sentinel-master", "m"}, nil, "--redis-sentinel-master: needs --redis-addr"},
		{"fail/redis-scheme", []string{"--redis-addr", "http://r:6379"}, nil, `scheme "http"`},
		{"fail/redis-mixed", []string{"--redis-addr", "rediss://r1:6379,r2:6379"}, nil, "use one form for every item"},
		{"fail/redis-mixed-2", []string{"--redis-addr", "r1:6379,rediss://r2:6379"}, nil, "use one form for every item"},
		{"fail/redis-differ", []string{"--redis-addr", "rediss://u:p@r1:6379,rediss://u:q@r2:6379"}, nil, "item 2 differs from item 1"},
		{"fail/redis-param", []string{"--redis-addr", "redis://r1:6379?read_timeout=10s"}, nil, `URL parameter "read_timeout" is not supported`},
		{"fail/redis-port", []string{"--redis-addr", "r1:0"}, nil, "want a number from 1 to 65535"},
		{"fail/redis-userinfo-without-scheme", []string{"--redis-addr", "kw:secret@r1:6379"}, nil, "--redis-addr: item 1: want host:port"},
		{"fail/redis-ca-without-tls", []string{"--redis-addr", "redis://r1:6379", "--redis-tls-ca-file", cert}, nil, "needs rediss:// URLs"},
		{"fail/postgres-dsn", []string{"--postgres-dsn", "postgres://kw:secret@db:notaport/kw"}, nil, "--postgres-dsn"},
		{"fail/postgres-sslrootcert", []string{"--postgres-dsn", "postgres://db/kw?sslmode=verify-full&sslrootcert=" + missing}, nil, "--postgres-dsn"},
		{"fail/annotated-with-env", nil, map[string]string{"KEYWARD_HTTP_ADDR": "nope"}, `--http-addr "nope": want host:port (set by env KEYWARD_HTTP_ADDR)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseWith(tc.args, tc.env)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
			if c == nil {
				t.Errorf("a validation error should still return the Config, for config print")
			}
			for _, secret := range []string{"secret", "'a b'"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q reveals a secret", err)
				}
			}
		})
	}

	// A value from the file is named by its line.
	p := writeFile(t, "keyward.yaml", "log-level: info\nnegative-cache-ttl: 3h\n")
	_, err := parseWith([]string{"--config", p}, nil)
	if err == nil || !strings.Contains(err.Error(), "(set by file "+p+":2)") {
		t.Errorf("fail/annotated-with-file: %v", err)
	}
}

func TestRedact(t *testing.T) {
	for _, tc := range []struct {
		name, flag, in, want string
	}{
		{"dsn/url-password", "postgres-dsn", "postgres://kw:s3cret@db:5432/kw?sslmode=verify-full", "postgres://kw:REDACTED@db:5432/kw?sslmode=verify-full"},
		{"dsn/url-no-password", "postgres-dsn", "postgres://kw@db/kw", "postgres://kw@db/kw"},
		{"dsn/url-query-password", "postgres-dsn", "postgresql://db/kw?user=kw&password=s3cret", "postgresql://db/kw?password=REDACTED&user=kw"},
		{"dsn/url-sslpassword", "postgres-dsn", "postgres://db/kw?sslkey=/k.pem&sslpassword=s3cret", "postgres://db/kw?sslkey=%2Fk.pem&sslpassword=REDACTED"},
		{"dsn/url-unparsable", "postgres-dsn", "postgres://kw:s3cret@db:port/kw", "(unparsable URL, not shown)"},
		{"dsn/keywords", "postgres-dsn", "host=db user=kw password=s3cret dbname=kw", "host=db user=kw password=REDACTED dbname=kw"},
		{"dsn/keywords-quoted", "postgres-dsn", `host=db password='s3 c\'ret' sslpassword = x sslrootcert='/etc/a b/ca.pem'`, `host=db password=REDACTED sslpassword=REDACTED sslrootcert='/etc/a b/ca.pem'`},
		{"dsn/keywords-unterminated", "postgres-dsn", "host=db password='s3cret", "(unparsable DSN, not shown)"},
		{"dsn/keywords-garbage", "postgres-dsn", "s3cret", "(unparsable DSN, not shown)"},
		{"redis/plain", "redis-addr", "r1:6379,r2:6379", "r1:6379,r2:6379"},
		{"redis/url-password", "redis-addr", "rediss://default:s3cret@r1:6380/0", "rediss://default:REDACTED@r1:6380/0"},
		{"redis/url-list", "redis-addr", "redis://:s3cret@r1:6379,redis://:s3cret@r2:6379", "redis://:REDACTED@r1:6379,redis://:REDACTED@r2:6379"},
		{"secret/suffix-key", "master-key", "s3cret", "REDACTED"},
		{"secret/suffix-password", "redis-sentinel-password", "s3cret", "REDACTED"},
		{"secret/key-file-is-a-path", "tls-key-file", "/etc/keyward/tls.key", "/etc/keyward/tls.key"},
		{"plain/other", "grpc-addr", "0.0.0.0:9090", "0.0.0.0:9090"},
		{"plain/empty", "master-key", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Redact(tc.flag, tc.in)
			if got != tc.want {
				t.Errorf("Redact(%q, %q) = %q, want %q", tc.flag, tc.in, got, tc.want)
			}
			if strings.Contains(got, "s3") {
				t.Errorf("Redact(%q, …) = %q still holds the secret", tc.flag, got)
			}
		})
	}
}

func TestWriteYAML(t *testing.T) {
	p := writeFile(t, "keyward.yaml", "environments: [live, staging]\nauth-query-param: api_key\n")
	env := map[string]string{
		"KEYWARD_POSTGRES_DSN": "postgres://kw:pg-s3cret@db/kw?sslmode=disable",
		"KEYWARD_REDIS_ADDR":   "rediss://default:redis-s3cret@r1:6380",
		"KEYWARD_ADMIN_KEY":    "kw_live_admin-s3cret-admin-s3cret",
	}
	c, err := parseWith([]string{"--config", p, "--log-level", "warn"}, env)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := c.WriteYAML(&out); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	if strings.Contains(text, "s3cret") {
		t.Fatalf("config print shows a secret:\n%s", text)
	}
	for _, want := range []string{
		"postgres-dsn: postgres://kw:REDACTED@db/kw?sslmode=disable # env KEYWARD_POSTGRES_DSN\n",
		"redis-addr: rediss://default:REDACTED@r1:6380 # env KEYWARD_REDIS_ADDR\n",
		"environments: live,staging # file " + p + ":1\n",
		"log-level: warn # flag\n",
		"grpc-addr: 127.0.0.1:9090 # default\n",
		"local-cache: true # default\n",
		`tls-cert-file: "" # default` + "\n",
		"# admin key: REDACTED (from KEYWARD_ADMIN_KEY)\n",
		"# config file: " + p + " (flag)\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("config print lacks %q:\n%s", want, text)
		}
	}

	// Without secrets, the output is itself a config file giving the same
	// configuration.
	c, err = parseWith([]string{"--config", p, "--log-level", "warn", "--negative-cache-ttl", "1m30s"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := c.WriteYAML(&out); err != nil {
		t.Fatal(err)
	}
	again, err := parseWith([]string{"--config", writeFile(t, "printed.yaml", out.String())}, nil)
	if err != nil {
		t.Fatalf("printed config does not parse: %v\n%s", err, out.String())
	}
	c.flags.VisitAll(func(f *flag.Flag) {
		if f.Name == configFlag {
			return
		}
		if got := again.flags.Lookup(f.Name).Value.String(); got != f.Value.String() {
			t.Errorf("round trip: %s = %q, want %q", f.Name, got, f.Value.String())
		}
	})
}
