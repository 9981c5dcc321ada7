package config

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"strings"
	"testing"
)

func masterKeyText(t *testing.T) (b64, hexText string) {
	t.Helper()
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(raw), hex.EncodeToString(raw)
}

func TestMasterKeys(t *testing.T) {
	a, aHex := masterKeyText(t)
	b, _ := masterKeyText(t)

	c, err := parseWith(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := c.Sealer(); s != nil || err != nil || c.RecoverableKeys() {
		t.Fatalf("ok/none: %v %v", s, err)
	}

	c, err = parseWith(nil, map[string]string{"KEYWARD_MASTER_KEY": a, "KEYWARD_PREVIOUS_MASTER_KEYS": b + ", " + aHex})
	if err != nil {
		t.Fatal(err)
	}
	fromEnv, err := c.Sealer()
	if err != nil || fromEnv == nil || !c.RecoverableKeys() {
		t.Fatalf("ok/env: %v %v", fromEnv, err)
	}

	// The same keys from files, with the usual trailing newline; the
	// sealers agree.
	c, err = parseWith([]string{"--master-key-file", writeFile(t, "new.key", aHex+"\n")},
		map[string]string{"KEYWARD_PREVIOUS_MASTER_KEY_FILES": writeFile(t, "old.key", b+"\n")})
	if err != nil {
		t.Fatal(err)
	}
	fromFile, err := c.Sealer()
	if err != nil || fromFile.Fingerprint() != fromEnv.Fingerprint() || len(c.PreviousMasterKeyFiles) != 1 {
		t.Fatalf("ok/files: %v", err)
	}
	sealed, err := fromEnv.Seal("key_1", []byte("s"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := fromFile.Open("key_1", sealed); err != nil || string(got) != "s" {
		t.Fatalf("ok/files: Open = %q, %v", got, err)
	}

	// Neither key appears where configuration is shown.
	var out bytes.Buffer
	c, _ = parseWith(nil, map[string]string{"KEYWARD_MASTER_KEY": a, "KEYWARD_PREVIOUS_MASTER_KEYS": b})
	if err := c.WriteYAML(&out); err != nil {
		t.Fatal(err)
	}
	slog.New(slog.NewTextHandler(&out, nil)).Info("config", "config", c)
	text := out.String()
	if strings.Contains(text, a) || strings.Contains(text, b) || strings.Contains(text, a[:12]) {
		t.Fatalf("a master key is shown:\n%s", text)
	}
	for _, want := range []string{"# master key: REDACTED (from KEYWARD_MASTER_KEY)", "# previous master keys: 1, REDACTED", "recoverable_keys=true"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
}

func TestMasterKeysRefused(t *testing.T) {
	a, _ := masterKeyText(t)
	short := base64.StdEncoding.EncodeToString([]byte("only sixteen b!!"))
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"fail/short-env", nil, map[string]string{"KEYWARD_MASTER_KEY": short}, "KEYWARD_MASTER_KEY: master key decodes to 16 bytes"},
		{"fail/not-encoded", nil, map[string]string{"KEYWARD_MASTER_KEY": "hunter2, my passphrase!"}, "neither base64 nor hex"},
		{"fail/short-file", []string{"--master-key-file", writeFile(t, "short.key", short)}, nil, "short.key: master key decodes to 16 bytes"},
		{"fail/missing-file", []string{"--master-key-file", "/nonexistent/master.key"}, nil, "--master-key-file: /nonexistent/master.key: no such file"},
		{"fail/both", []string{"--master-key-file", writeFile(t, "a.key", a)}, map[string]string{"KEYWARD_MASTER_KEY": a}, "one way"},
		{"fail/previous-alone", nil, map[string]string{"KEYWARD_PREVIOUS_MASTER_KEYS": a}, "need a current one"},
		{"fail/previous-short", nil, map[string]string{"KEYWARD_MASTER_KEY": a, "KEYWARD_PREVIOUS_MASTER_KEYS": a + "," + short}, "KEYWARD_PREVIOUS_MASTER_KEYS: item 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseWith(tc.args, tc.env)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			for _, secret := range []string{a, short, "hunter2"} {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("the error shows the key: %v", err)
				}
			}
		})
	}
}
