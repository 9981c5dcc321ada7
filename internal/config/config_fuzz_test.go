package config

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse feeds Parse arbitrary command-line arguments (one a line),
// KEYWARD_* variables ("NAME=value" lines) and a config file body. Parse
// never panics, and:
//   - each error it returns (each part of a joined error) says where the
//     bad value is: it names a flag (--name, -name or a KEYWARD_ variable)
//     or the config file;
//   - no error repeats the value of KEYWARD_ADMIN_KEY, KEYWARD_MASTER_KEY
//     or KEYWARD_PREVIOUS_MASTER_KEYS;
//   - an accepted configuration prints (WriteYAML, as `keyward config
//     print`), and the printed file, read back as a config file, gives the
//     same settings (unless printing redacted one).
//
// The config file is the file body unless the arguments or variables name
// another. Inputs mentioning dev, proc or sys are skipped, so that no path
// they name is a device, a pipe or a kernel file that blocks when read.
func FuzzParse(f *testing.F) {
	f.Add("--grpc-addr\n127.0.0.1:1001", "KEYWARD_LOG_LEVEL=debug", []byte("http-addr: 127.0.0.1:2001\n"))
	defaults, err := parseWith(nil, nil)
	if err != nil {
		f.Fatal(err)
	}
	var names []string
	defaults.flags.VisitAll(func(fl *flag.Flag) { names = append(names, fl.Name) })
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, args, env string, file []byte) {
		for _, in := range []string{args, env, string(file)} {
			if strings.Contains(in, "dev") || strings.Contains(in, "proc") || strings.Contains(in, "sys") {
				return
			}
		}
		path := filepath.Join(dir, "keyward.yaml")
		if err := os.WriteFile(path, file, 0o600); err != nil {
			t.Fatal(err)
		}
		vars := map[string]string{EnvName(configFlag): path}
		for _, line := range strings.Split(env, "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				vars[k] = v
			}
		}
		var argv []string
		if args != "" {
			argv = strings.Split(args, "\n")
		}
		getenv := func(k string) string { return vars[k] }

		c, err := Parse("serve", argv, getenv)
		if err != nil {
			for _, e := range flatten(err) {
				if msg := e.Error(); !saysWhere(msg, names, configFiles(vars, argv)) {
					t.Errorf("error names no flag, variable or file: %q", msg)
				}
			}
			for _, secret := range []string{"KEYWARD_ADMIN_KEY", "KEYWARD_MASTER_KEY", "KEYWARD_PREVIOUS_MASTER_KEYS"} {
				v := vars[secret]
				if len(v) < 8 || strings.Contains(args, v) || bytes.Contains(file, []byte(v)) || strings.Contains(path, v) || strings.Count(env, v) > 1 {
					continue // too short to tell, or given elsewhere too
				}
				if strings.Contains(err.Error(), v) {
					t.Errorf("error repeats the value of %s: %q", secret, err)
				}
			}
			return
		}

		// Print, and read the printed file back.
		var out bytes.Buffer
		if err := c.WriteYAML(&out); err != nil {
			t.Fatalf("WriteYAML of an accepted configuration: %v", err)
		}
		redacts := false
		c.flags.VisitAll(func(fl *flag.Flag) {
			redacts = redacts || Redact(fl.Name, fl.Value.String()) != fl.Value.String()
		})
		if redacts {
			return
		}
		printed := filepath.Join(dir, "printed.yaml")
		if err := os.WriteFile(printed, out.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		back, err := Parse("serve", []string{"--config", printed}, func(k string) string {
			switch k {
			case "KEYWARD_ADMIN_KEY", "KEYWARD_MASTER_KEY", "KEYWARD_PREVIOUS_MASTER_KEYS":
				return vars[k] // never printed, so given again
			}
			return ""
		})
		if err != nil {
			t.Fatalf("printed configuration refused: %v\n%s", err, out.Bytes())
		}
		c.flags.VisitAll(func(fl *flag.Flag) {
			if fl.Name == configFlag {
				return
			}
			if got, want := back.flags.Lookup(fl.Name).Value.String(), fl.Value.String(); got != want {
				t.Errorf("--%s printed and read back as %q, was %q\n%s", fl.Name, got, want, out.Bytes())
			}
		})
	})
}

// configFiles lists the files Parse may have read as the config file: the
// one KEYWARD_CONFIG names, and any argument (or value after "=") that may
// be the value of --config.
func configFiles(vars map[string]string, argv []string) []string {
	files := []string{vars[EnvName(configFlag)]}
	for _, a := range argv {
		_, v, _ := strings.Cut(a, "=")
		files = append(files, a, v)
	}
	return files
}

// saysWhere reports whether an error message names where its value came
// from: a flag, a KEYWARD_ variable or the config file (as "<file>:<line>:"
// or "<file>: ").
func saysWhere(msg string, names, files []string) bool {
	if strings.Contains(msg, "KEYWARD_") {
		return true
	}
	for _, f := range files {
		if f != "" && strings.HasPrefix(msg, f+":") {
			return true
		}
	}
	for _, n := range names {
		if strings.Contains(msg, "-"+n) {
			return true
		}
	}
	// The flag package's own complaints about the command line, which say
	// what is wrong with it.
	for _, p := range []string{"flag provided but not defined: -", "bad flag syntax: ", "flag: help requested", "unexpected arguments: "} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}
