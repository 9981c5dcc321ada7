package config

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/keyward/keyward/internal/sealer"
)

// secretSettings configure the master key under which recoverable keys'
// secrets are sealed (internal/sealer). Without one, recoverable keys are
// refused.
type secretSettings struct {
	// MasterKey comes only from KEYWARD_MASTER_KEY, never a flag: flags show
	// in ps. 32 random bytes as base64 or hex.
	MasterKey string `json:"-"`
	// PreviousMasterKeys comes only from KEYWARD_PREVIOUS_MASTER_KEYS
	// (comma-separated): keys being rotated out, still able to open what
	// they sealed.
	PreviousMasterKeys string `json:"-"`
	// MasterKeyFile and PreviousMasterKeyFiles name files holding the same
	// (the form for mounted secrets).
	MasterKeyFile          string
	PreviousMasterKeyFiles []string
}

// secretFlags reads the variables that are never flags and defines the
// flags of secretSettings on fs.
func (c *Config) secretFlags(fs *flag.FlagSet, getenv func(string) string) {
	c.MasterKey = getenv("KEYWARD_MASTER_KEY")
	c.PreviousMasterKeys = getenv("KEYWARD_PREVIOUS_MASTER_KEYS")
	fs.StringVar(&c.MasterKeyFile, "master-key-file", "", "file holding the master key (32 random bytes as base64 or hex) that encrypts recoverable keys' secrets; or set KEYWARD_MASTER_KEY; none: recoverable keys are refused (KEYWARD_MASTER_KEY_FILE)")
	fs.Var((*listValue)(&c.PreviousMasterKeyFiles), "previous-master-key-files", "comma-separated `files` holding master keys being rotated out, still used to decrypt; or set KEYWARD_PREVIOUS_MASTER_KEYS (KEYWARD_PREVIOUS_MASTER_KEY_FILES)")
}

// RecoverableKeys reports whether a master key is configured.
func (c *Config) RecoverableKeys() bool { return c.MasterKey != "" || c.MasterKeyFile != "" }

func (c *Config) validateSecrets() []error {
	_, err := c.Sealer()
	if err == nil {
		return nil
	}
	return flatten(err)
}

// Sealer returns the sealer of the configured master keys, or nil (and no
// error) if there is no master key. Its errors name where a bad key came
// from, never its value.
func (c *Config) Sealer() (*sealer.Sealer, error) {
	current, previous, err := c.masterKeys()
	defer func() {
		clear(current)
		for _, p := range previous {
			clear(p)
		}
	}()
	if err != nil || current == nil {
		return nil, err
	}
	return sealer.New(current, previous...)
}

// masterKeys decodes the configured master keys; current is nil without one.
func (c *Config) masterKeys() (current []byte, previous [][]byte, err error) {
	var errs []error
	if c.MasterKey != "" && c.MasterKeyFile != "" {
		errs = append(errs, errors.New("--master-key-file: KEYWARD_MASTER_KEY is set too; give the master key one way"))
	}
	switch {
	case c.MasterKey != "":
		current, err = sealer.ParseKey(c.MasterKey)
		if err != nil {
			errs = append(errs, fmt.Errorf("KEYWARD_MASTER_KEY: %w", err))
		}
	case c.MasterKeyFile != "":
		current, err = readKeyFile(c.MasterKeyFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("--master-key-file: %w", err))
		}
	}
	for i, text := range splitList(c.PreviousMasterKeys) {
		k, err := sealer.ParseKey(text)
		if err != nil {
			errs = append(errs, fmt.Errorf("KEYWARD_PREVIOUS_MASTER_KEYS: item %d: %w", i+1, err))
			continue
		}
		previous = append(previous, k)
	}
	for _, path := range c.PreviousMasterKeyFiles {
		k, err := readKeyFile(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("--previous-master-key-files: %w", err))
			continue
		}
		previous = append(previous, k)
	}
	if len(previous) > 0 && !c.RecoverableKeys() {
		errs = append(errs, errors.New("--previous-master-key-files: previous master keys need a current one (KEYWARD_MASTER_KEY or --master-key-file)"))
	}
	if err := errors.Join(errs...); err != nil {
		clear(current)
		for _, p := range previous {
			clear(p)
		}
		return nil, nil, err
	}
	return current, previous, nil
}

// readKeyFile reads one master key from a file. Its errors name the file,
// never its content.
func readKeyFile(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("%s: %w", path, pe.Err)
		}
		return nil, err
	}
	defer clear(raw)
	k, err := sealer.ParseKey(string(raw))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// describeSecrets says, for `keyward config print`, which master keys are
// set and from where, never what they are.
func (c *Config) describeSecrets() string {
	var b strings.Builder
	switch {
	case c.MasterKey != "":
		b.WriteString("# master key: " + redacted + " (from KEYWARD_MASTER_KEY)\n")
	case c.MasterKeyFile == "":
		b.WriteString("# master key: none (recoverable keys are refused)\n")
	}
	if n := len(splitList(c.PreviousMasterKeys)); n > 0 {
		fmt.Fprintf(&b, "# previous master keys: %d, %s (from KEYWARD_PREVIOUS_MASTER_KEYS)\n", n, redacted)
	}
	return b.String()
}

// listValue is a comma-separated list flag; setting it replaces the list.
type listValue []string

func (l *listValue) String() string { return strings.Join(*l, ",") }

func (l *listValue) Set(s string) error {
	*l = splitList(s)
	return nil
}
