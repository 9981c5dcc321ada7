// Command kwbench is `make bench`: it measures Keyward's Validate hot path
// against baselines in one run, on one machine.
//
// It builds ./cmd/keyward, creates a fresh Postgres database, seeds it with
// keys through the store, and then for each path — in-process hit, Redis
// hit, store hit — runs a baseline gRPC server (no-op, one Redis GET, one
// pgx SELECT) and a real `keyward serve` in turn, driving each with the same
// lean load generator in a separate process at each concurrency. It adds
// allocation benchmarks of the in-process path (go test -benchmem) and the
// DisableKey latency with three instances running, prints a Markdown report
// with PASS/MISS against the targets of issue 3, and removes every process
// and the database when it ends, Ctrl-C included.
//
// kwbench re-executes itself for its child roles (hidden first argument):
// "__load" is the load generator, "__baseline" a baseline server.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/keyward/keyward/cmd/kwbench/internal/baseline"
	"github.com/keyward/keyward/cmd/kwbench/internal/loadgen"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	var err error
	switch {
	case len(os.Args) > 1 && os.Args[1] == "__load":
		err = loadgen.Main(ctx, os.Args[2:], os.Stdout)
	case len(os.Args) > 1 && os.Args[1] == "__baseline":
		err = baseline.Main(ctx, os.Args[2:])
	default:
		err = orchestrate(ctx, stop, os.Args[1:])
	}
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "kwbench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}
