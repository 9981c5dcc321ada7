// Command keyward is the API-key authority: `keyward serve` runs it,
// `keyward migrate` prepares its store, `keyward version` says which build.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/keyward/keyward/internal/app"
	"github.com/keyward/keyward/internal/config"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = ""

const usage = `usage: keyward <command> [flags]

commands:
  serve        run the gRPC and HTTP listeners
  migrate      apply store migrations and exit
  keys         manage keys through a running server (keyward keys -h)
  config       print the effective configuration, secrets redacted (keyward config print)
  audit        check the audit trail's hash chain (keyward audit verify)
  healthcheck  exit 0 if the local server's /healthz answers (for container HEALTHCHECKs)
  rotate-master-key
               re-encrypt recoverable keys' secrets under a new master key (docs/recoverable.md)
  version      print the version

Run "keyward <command> -h" for the flags of a command.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "keyward:", err)
		os.Exit(exitCode(err)) // 1, or the documented code of a keys command
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		cfg, err := config.Parse("keyward serve", rest, os.Getenv)
		if err != nil {
			return err
		}
		a, err := app.New(ctx, cfg, cfg.Logger())
		if err != nil {
			return err
		}
		return a.Run(ctx)
	case "migrate":
		cfg, err := config.Parse("keyward migrate", rest, os.Getenv)
		if err != nil {
			return err
		}
		st, err := app.OpenStore(ctx, cfg) // opening applies the embedded migrations
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, "migrations applied")
		return st.Close()
	case "config":
		return configCommand(rest, os.Getenv, stdout, stderr)
	case "audit":
		return auditCommand(ctx, rest, os.Getenv, stdout, stderr)
	case "keys":
		return keysCommand(ctx, rest, os.Stdin, stdout, stderr)
	case "rotate-master-key":
		return rotateCommand(ctx, rest, os.Getenv, stdout, stderr)
	case "healthcheck":
		return healthcheckCommand(ctx, rest, os.Getenv, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, buildVersion())
		return nil
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "devel"
}
