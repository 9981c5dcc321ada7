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
  serve     run the gRPC and HTTP listeners
  migrate   apply store migrations and exit
  keys      manage keys through a running server (keyward keys -h)
  version   print the version

Run "keyward <command> -h" for the flags of a command.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "keyward:", err)
		os.Exit(1)
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
	case "keys":
		return keysCommand(ctx, rest, stdout, stderr)
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
