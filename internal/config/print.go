package config

import (
	"flag"
	"fmt"
	"io"
	"strconv"
	"unicode"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// WriteYAML writes the effective configuration as a config file would hold
// it: one key per flag, secrets redacted, and where each value came from as
// a comment. The admin key, which is never a flag, is described, not shown.
func (c *Config) WriteYAML(w io.Writer) error {
	if c.flags == nil {
		return fmt.Errorf("config: WriteYAML needs a Config made by Parse")
	}
	root := &yaml.Node{Kind: yaml.MappingNode}
	c.flags.VisitAll(func(f *flag.Flag) {
		if f.Name == configFlag {
			return
		}
		v := &yaml.Node{Kind: yaml.ScalarNode, Value: Redact(f.Name, f.Value.String()), LineComment: commentText(c.sources[f.Name].String())}
		if _, isBool := f.Value.(interface{ IsBoolFlag() bool }); !isBool && !plainSafe(v.Value) {
			v.Style = yaml.DoubleQuotedStyle
		}
		root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: f.Name}, v)
	})
	head := "# effective configuration; the comment after each value says where it came from:\n" +
		"# flag, env (KEYWARD_* variable), file (--config / KEYWARD_CONFIG) or default\n"
	if c.ConfigFile != "" {
		head += fmt.Sprintf("# config file: %s (%s)\n", commentText(c.ConfigFile), c.sources[configFlag])
	}
	if _, err := io.WriteString(w, head); err != nil {
		return err
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return err
	}
	if err := enc.Close(); err != nil {
		return err
	}
	admin := "# admin key: generated into " + commentText(c.AdminKeyFile()) + " on first start"
	if c.AdminKey != "" {
		admin = "# admin key: " + redacted + " (from KEYWARD_ADMIN_KEY)"
	}
	_, err := io.WriteString(w, admin+"\n"+c.describeSecrets())
	return err
}

// commentText is s fit for a YAML comment: quoted, with escapes, if it has
// a line break or another control character (which would end the comment)
// or bytes that are not UTF-8 (which make the file unreadable as YAML).
func commentText(s string) string {
	for _, r := range s {
		if r == utf8.RuneError || unicode.IsControl(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// plainSafe reports whether s reads back as the same string when written
// as a plain YAML scalar; otherwise it is quoted.
func plainSafe(s string) bool {
	if s == "" {
		return false
	}
	var back string
	out, err := yaml.Marshal(&yaml.Node{Kind: yaml.ScalarNode, Value: s})
	if err != nil || yaml.Unmarshal(out, &back) != nil {
		return false
	}
	return back == s
}
