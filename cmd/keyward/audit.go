package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/keyward/keyward/internal/app"
	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/config"
)

const auditUsage = `usage: keyward audit verify [store flags]

Reads the whole audit trail from the store (--postgres-dsn or --data-dir, as
for serve) and checks its hash chain: consecutive sequence numbers, each event
linked to the one before, and each event's hash matching its content. Exits 0
if it verifies, 1 naming the first event that does not.
`

// auditCommand is `keyward audit verify`.
func auditCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "verify" {
		fmt.Fprint(stderr, auditUsage)
		return errors.New("audit: want the subcommand verify")
	}
	cfg, err := config.Parse("keyward audit verify", args[1:], getenv)
	if err != nil {
		return err
	}
	st, err := app.OpenStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	var v audit.Verifier
	var last *audit.Event
	err = st.ScanAudit(ctx, func(e *audit.Event) error {
		last = e
		return v.Add(e)
	})
	if err != nil {
		return fmt.Errorf("audit trail: %w (%d events verified before it)", err, v.Count())
	}
	if last == nil {
		fmt.Fprintln(stdout, "audit trail verified: no events yet")
		return nil
	}
	fmt.Fprintf(stdout, "audit trail verified: %d events, newest %d at %s, head hash %x\n",
		v.Count(), last.Seq, last.Time.Format("2006-01-02T15:04:05Z07:00"), last.Hash)
	return nil
}
