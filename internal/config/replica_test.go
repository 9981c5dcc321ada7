package config

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestReplicaDSN(t *testing.T) {
	const primary = "postgres://kw:pg-s3cret@db/kw?sslmode=disable"
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string // "" means valid
	}{
		{"ok/none", nil, nil, ""},
		{"ok/flag", []string{"--postgres-dsn", primary, "--postgres-replica-dsn", "postgres://kw:rep-s3cret@replica/kw"}, nil, ""},
		{"ok/env", []string{"--postgres-dsn", primary}, map[string]string{"KEYWARD_POSTGRES_REPLICA_DSN": "host=replica user=kw password=rep-s3cret"}, ""},
		{"fail/without-primary", []string{"--postgres-replica-dsn", "postgres://replica/kw"}, nil, "--postgres-replica-dsn: needs --postgres-dsn"},
		{"fail/unparsable", []string{"--postgres-dsn", primary, "--postgres-replica-dsn", "postgres://kw:rep-s3cret@replica:notaport/kw"}, nil, "--postgres-replica-dsn: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseWith(tc.args, tc.env)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "s3cret") {
				t.Errorf("the error shows a password: %v", err)
			}
			if c == nil {
				return
			}
			var out bytes.Buffer
			if err := c.WriteYAML(&out); err != nil {
				t.Fatal(err)
			}
			var logged bytes.Buffer
			slog.New(slog.NewTextHandler(&logged, nil)).Info("config", "config", c)
			for what, text := range map[string]string{"config print": out.String(), "the start-up log": logged.String()} {
				if strings.Contains(text, "s3cret") {
					t.Errorf("%s shows a password:\n%s", what, text)
				}
			}
			if tc.want == "" && c.PostgresReplicaDSN != "" {
				if !strings.Contains(out.String(), "postgres-replica-dsn: ") || strings.Count(out.String(), "REDACTED") < 2 {
					t.Errorf("config print does not show the redacted replica DSN:\n%s", out.String())
				}
				if !strings.Contains(logged.String(), "replica:") {
					t.Errorf("the start-up log does not name the replica:\n%s", logged.String())
				}
			}
		})
	}
}
