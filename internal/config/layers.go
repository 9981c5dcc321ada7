package config

import (
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Every setting is a flag of one flag.FlagSet, and the same FlagSet is filled
// from three more layers, so a flag added to Parse is at once settable as
// KEYWARD_<NAME> and as <name>: in the config file. Precedence, highest first:
//
//	command-line flag > KEYWARD_* variable > config file > default
//
// An empty variable counts as unset.

// Source kinds, as `keyward config print` shows them.
const (
	fromDefault = "default"
	fromFile    = "file"
	fromEnv     = "env"
	fromFlag    = "flag"
)

// source says where a setting's value came from.
type source struct {
	kind string // fromDefault, fromFile, fromEnv or fromFlag
	at   string // "path:line" for a file, the variable's name for env
}

func (s source) String() string {
	if s.at == "" {
		return s.kind
	}
	return s.kind + " " + s.at
}

// EnvName is the environment variable of a flag: KEYWARD_ and the flag's
// name in upper case, dashes as underscores (grpc-addr → KEYWARD_GRPC_ADDR).
func EnvName(flagName string) string {
	return "KEYWARD_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// configFlag names the config file; it cannot itself be set in a file.
const configFlag = "config"

// envOnly are secrets that are deliberately neither flags nor file keys,
// with where they go instead.
var envOnly = map[string]string{
	"admin-key":  "set KEYWARD_ADMIN_KEY, or let Keyward generate <data-dir>/admin.key",
	"master-key": "set KEYWARD_MASTER_KEY, or name a file with master-key-file",
}

// layer fills fs from args, the environment and the config file, in that
// order of precedence, and records where each value came from. It defines
// the --config flag itself.
func (c *Config) layer(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	fs.StringVar(&c.ConfigFile, configFlag, "", "YAML file of settings, keyed by these flags' names; flags and variables override it (KEYWARD_CONFIG)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	c.flags = fs
	c.sources = map[string]source{}
	fs.Visit(func(f *flag.Flag) { c.sources[f.Name] = source{kind: fromFlag} })
	if _, set := c.sources[configFlag]; !set {
		if v := getenv(EnvName(configFlag)); v != "" {
			c.ConfigFile = v
			c.sources[configFlag] = source{kind: fromEnv, at: EnvName(configFlag)}
		} else {
			c.sources[configFlag] = source{kind: fromDefault}
		}
	}
	var file map[string]fileValue
	if c.ConfigFile != "" {
		var err error
		if file, err = readFile(c.ConfigFile, fs); err != nil {
			return err
		}
	}
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if _, set := c.sources[f.Name]; set {
			return
		}
		if name := EnvName(f.Name); getenv(name) != "" {
			v := getenv(name)
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %s", name, Redact(f.Name, v), want(f, err)))
			}
			c.sources[f.Name] = source{kind: fromEnv, at: name}
			return
		}
		if v, ok := file[f.Name]; ok {
			at := fmt.Sprintf("%s:%d", c.ConfigFile, v.line)
			if err := fs.Set(f.Name, v.value); err != nil {
				errs = append(errs, fmt.Errorf("%s: %s: %q: %s", at, f.Name, Redact(f.Name, v.value), want(f, err)))
			}
			c.sources[f.Name] = source{kind: fromFile, at: at}
			return
		}
		c.sources[f.Name] = source{kind: fromDefault}
	})
	return errors.Join(errs...)
}

// want says what a flag's value must look like, for a value it refused:
// for the standard types in words, for others the flag's own error.
func want(f *flag.Flag, err error) string {
	if g, ok := f.Value.(flag.Getter); ok {
		switch g.Get().(type) {
		case bool:
			return "want true or false"
		case int, int64, uint, uint64:
			return "want an integer"
		case float64:
			return "want a number"
		case time.Duration:
			return "want a duration such as 250ms, 5s or 1h30m"
		}
	}
	return err.Error()
}

// fileValue is one setting read from the config file.
type fileValue struct {
	value string
	line  int
}

// readFile reads a YAML mapping of flag names to values. A list value is
// joined with commas (for flags that take comma-separated lists). Unknown
// and repeated keys are errors naming the line.
func readFile(path string, fs *flag.FlagSet) (map[string]fileValue, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := map[string]fileValue{}
	if len(doc.Content) == 0 {
		return out, nil // empty file, or only comments
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return out, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:%d: want a mapping of setting names to values, like \"grpc-addr: 0.0.0.0:9090\"", path, root.Line)
	}
	var errs []error
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			errs = append(errs, fmt.Errorf("%s:%d: a setting name must be a plain string", path, k.Line))
			continue
		}
		name := k.Value
		switch {
		case name == configFlag:
			errs = append(errs, fmt.Errorf("%s:%d: %q cannot be set in a config file", path, k.Line, name))
			continue
		case envOnly[name] != "":
			errs = append(errs, fmt.Errorf("%s:%d: %q cannot be set in a config file, which is easily shared or committed: %s", path, k.Line, name, envOnly[name]))
			continue
		case fs.Lookup(name) == nil:
			errs = append(errs, fmt.Errorf("%s:%d: unknown key %q%s", path, k.Line, name, suggest(name, fs)))
			continue
		}
		if prev, dup := out[name]; dup {
			errs = append(errs, fmt.Errorf("%s:%d: %q is already set on line %d", path, k.Line, name, prev.line))
			continue
		}
		value, err := nodeValue(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %s: %w", path, v.Line, name, err))
			continue
		}
		out[name] = fileValue{value: value, line: k.Line}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// nodeValue is a flag's text for a YAML value: a scalar as written, null as
// "", a list of scalars joined with commas.
func nodeValue(n *yaml.Node) (string, error) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "", nil
		}
		return scalarValue(n)
	case yaml.SequenceNode:
		items := make([]string, 0, len(n.Content))
		for _, item := range n.Content {
			if item.Kind == yaml.AliasNode {
				item = item.Alias
			}
			if item.Kind != yaml.ScalarNode {
				return "", errors.New("want a list of plain values")
			}
			v, err := scalarValue(item)
			if err != nil {
				return "", err
			}
			if strings.Contains(v, ",") {
				return "", fmt.Errorf("list item %q contains a comma; list items are joined with commas", v)
			}
			items = append(items, v)
		}
		return strings.Join(items, ","), nil
	}
	return "", errors.New("want a value or a list of values, not a mapping")
}

// scalarValue is a scalar's text. A !!binary scalar is base64 of its bytes:
// YAML has no other way to write a value that is not UTF-8 (a path, say),
// and it is how WriteYAML prints one.
func scalarValue(n *yaml.Node) (string, error) {
	if n.ShortTag() != "!!binary" {
		return n.Value, nil
	}
	b, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(n.Value), ""))
	if err != nil {
		return "", errors.New("!!binary value: want base64")
	}
	return string(b), nil
}

// suggest names the flag a misspelt key probably meant.
func suggest(key string, fs *flag.FlagSet) string {
	norm := func(s string) string {
		return strings.NewReplacer("-", "", "_", "", ".", "").Replace(strings.ToLower(s))
	}
	best, bestDist := "", 3 // suggest only within an edit distance of 2
	var names []string
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name != configFlag {
			names = append(names, f.Name)
		}
	})
	sort.Strings(names)
	for _, name := range names {
		n, k := norm(name), norm(key)
		if n == k || (len(n) >= 6 && strings.HasPrefix(k, n)) || (len(k) >= 6 && strings.HasPrefix(n, k)) {
			return fmt.Sprintf(" (did you mean %q?)", name) // same but for separators, or cut short or run on
		}
		if d := editDistance(norm(name), norm(key)); d < bestDist {
			best, bestDist = name, d
		}
	}
	if best == "" {
		return " (the keys are the names of keyward serve's flags, without --)"
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// annotate adds to each validation error that starts with "--<flag>" where
// that flag's value came from, unless from the command line or the default.
func (c *Config) annotate(err error) error {
	if err == nil {
		return nil
	}
	list := flatten(err)
	out := make([]error, 0, len(list))
	for _, e := range list {
		msg := e.Error()
		name, _, _ := strings.Cut(strings.TrimPrefix(msg, "--"), " ")
		name = strings.TrimRight(name, ":=,")
		if src, ok := c.sources[name]; ok && strings.HasPrefix(msg, "--") && (src.kind == fromEnv || src.kind == fromFile) {
			e = fmt.Errorf("%w (set by %s)", e, src)
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}

// flatten lists the errors inside nested errors.Join results.
func flatten(err error) []error {
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var out []error
	for _, e := range j.Unwrap() {
		out = append(out, flatten(e)...)
	}
	return out
}
