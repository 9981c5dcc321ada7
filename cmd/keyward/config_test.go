package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigPrint(t *testing.T) {
	file := filepath.Join(t.TempDir(), "keyward.yaml")
	if err := os.WriteFile(file, []byte("postgres-dsn: \"host=db user=kw password='file s3cret' sslmode=verify-full\"\nredis-namespace: prod\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"KEYWARD_CONFIG":     file,
		"KEYWARD_REDIS_ADDR": "rediss://default:env-s3cret@r1:6380,rediss://default:env-s3cret@r2:6380",
		"KEYWARD_ADMIN_KEY":  "kw_live_admin-s3cret-admin-s3cret-admin",
	}
	getenv := func(k string) string { return env[k] }
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string
		want    []string
	}{
		{"ok/redacted", []string{"print", "--http-addr", "0.0.0.0:8443"}, "", []string{
			"postgres-dsn: host=db user=kw password=REDACTED sslmode=verify-full # file " + file + ":1",
			"redis-addr: rediss://default:REDACTED@r1:6380,rediss://default:REDACTED@r2:6380 # env KEYWARD_REDIS_ADDR",
			"redis-namespace: prod # file " + file + ":2",
			"http-addr: 0.0.0.0:8443 # flag",
			"# admin key: REDACTED (from KEYWARD_ADMIN_KEY)",
		}},
		{"fail/invalid-still-printed", []string{"print", "--negative-cache-ttl", "3h"}, "--negative-cache-ttl", []string{
			"negative-cache-ttl: 3h0m0s # flag",
		}},
		{"fail/unknown-subcommand", []string{"show"}, `unknown subcommand "show"`, nil},
		{"fail/no-subcommand", nil, "no subcommand", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := configCommand(tc.args, getenv, &stdout, &stderr)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("error: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
			}
			out := stdout.String() + stderr.String()
			if strings.Contains(out, "s3cret") || (err != nil && strings.Contains(err.Error(), "s3cret")) {
				t.Fatalf("a secret is shown:\n%s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(stdout.String(), w+"\n") {
					t.Errorf("output lacks %q:\n%s", w, stdout.String())
				}
			}
		})
	}

	// Through main's dispatcher, as `keyward config print` runs.
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"config", "print", "--data-dir", "/var/lib/keyward"}, &stdout, &stderr); err != nil {
		t.Fatalf("keyward config print: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "data-dir: /var/lib/keyward # flag\n") {
		t.Errorf("keyward config print:\n%s", stdout.String())
	}
}
