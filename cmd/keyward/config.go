package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/keyward/keyward/internal/config"
)

const configUsage = `usage: keyward config print [serve flags]

Prints the configuration keyward serve would run with, from the same flags,
KEYWARD_* variables and config file (--config), as YAML with the keys a config
file takes. Secrets are redacted; a comment after each value says where it
came from. Exits non-zero, after printing, if the configuration is invalid.
`

// configCommand runs `keyward config …`.
func configCommand(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, configUsage)
		if len(args) == 0 {
			return errors.New("config: no subcommand given")
		}
		return nil
	}
	switch args[0] {
	case "print":
		cfg, err := config.Parse("keyward config print", args[1:], getenv)
		if cfg == nil {
			return err // the flags or the file could not be read at all
		}
		if werr := cfg.WriteYAML(stdout); werr != nil {
			return werr
		}
		if err != nil {
			return fmt.Errorf("the configuration is invalid:\n%w", err)
		}
		return nil
	default:
		fmt.Fprint(stderr, configUsage)
		return fmt.Errorf("config: unknown subcommand %q", args[0])
	}
}
