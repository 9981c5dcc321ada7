package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"
)

// keysUsage is part of the contract: scripts rely on the exit codes.
const keysUsage = `usage: keyward keys <command> [KEY_ID] [flags]

commands:
  create      --name N [--description D] [--environment E] [--scopes a,b]
              [--metadata k=v,...] [--expire-time RFC3339 | --ttl DURATION] [--recoverable]
              [--allowed-cidrs a,b] [--rate-limit N[/PERIOD] [--burst N]]
              [--quota N [--quota-refill never|daily|monthly]]
  list        [--query Q] [--unused-days N] [--page-size N] [--page-token T] [--all]
              --unused-days: only keys not used for N days (candidates to disable)
  search      QUERY | --stdin  [--page-size N] [--page-token T] [--all]
              by name or by a pasted key; pass a key with --stdin, never as an argument
  get         KEY_ID
  update      KEY_ID [--name N] [--description D] [--scopes a,b] [--metadata k=v,...]
              [--expire-time RFC3339 | --ttl DURATION] [--allowed-cidrs a,b]
              [--rate-limit N[/PERIOD] [--burst N]] [--quota N [--quota-refill R]] [--etag E]
              only the flags given change; an empty value clears (--expire-time "": never,
              --rate-limit "": no rate limit); a rate limit or quota is replaced whole
  enable      KEY_ID [--etag E]
  disable     KEY_ID [--etag E]
  regenerate  KEY_ID [--etag E] [--grace-period DURATION]
              --grace-period: the old secret keeps working this long beside the new one
  delete      KEY_ID [--etag E]
  reveal      KEY_ID
              prints the secret of a recoverable key (audited, rate limited)
  report-leak (--key-id ID | --stdin) --action disable|regenerate --reason TEXT
              disables or regenerates the key of a leaked secret; pass the secret with
              --stdin, never as an argument; prints the new secret when regenerated
  audit       [--key-id ID] [--page-size N] [--page-token T] [--all]
              the audit trail, newest first
  usage       KEY_ID [--since DURATION | --start RFC3339 [--end RFC3339]]
              verifications by hour and outcome (default: the last 24 hours), and last use
  validate    [--key-file F] [--scopes a,b] [--environment E] [--client-ip IP]
              reads the key from stdin (or F), never from arguments: ps shows those

values:
  DURATION    Go durations plus days: 90d, 36h, 1d12h, 30m
  N/PERIOD    N requests per PERIOD, 1s to 1d (default 1s): 100, 100/1s, 1000/1m, 50000/1d;
              --burst: most requests at once (default N)
  --quota N   N successful validations in all (never), or per day or month (daily, monthly)

flags of every command:
  --server HOST:PORT   gRPC address of a keyward server (KEYWARD_SERVER, default 127.0.0.1:9090)
  -o text|json         a table for people (default), or protojson for scripts
  --admin-key-file F   file holding the admin key (default: KEYWARD_ADMIN_KEY; validate needs none)
  --timeout D          deadline of the call (default 30s)
  --tls, --tls-ca-file F  connect with TLS, verifying the server against the system's CAs or F
  --etag E             with update, enable, disable, regenerate, delete: act only if the
                       key is unchanged since you read this etag

exit codes:
  0  done; for validate: the key is valid
  1  any other error (e.g. an internal server error)
  2  usage error, or the server refused the request as invalid (InvalidArgument)
  3  validate: the key is refused (the reason is printed)
  4  no such key (NotFound)
  5  conflict or precondition: --etag does not match, the key changed meanwhile, or
     the key or server cannot do it, e.g. reveal of a key that is not recoverable
     (Aborted, FailedPrecondition, AlreadyExists)
  6  not authorised: no, a wrong or a non-admin key (Unauthenticated, PermissionDenied)
  7  retry later: the server or its store is unavailable, the call timed out, or the
     server asks to wait, e.g. too many reveals (the delay is printed): retrying is safe
     (Unavailable, DeadlineExceeded, ResourceExhausted with a retry delay)
`

// keysCmd is one `keyward keys <sub>` invocation: a thin gRPC client of
// KeyService for operators and scripts.
type keysCmd struct {
	sub string
	fs  *flag.FlagSet
	in  io.Reader
	out io.Writer

	server, output, adminKeyFile string
	timeout                      time.Duration
	tls                          bool
	tlsCAFile                    string

	// Key fields (create, update); which were given decides update's mask.
	name, description, environment, scopes, metadata, expireTime string
	ttl, allowedCIDRs, rateLimit, quota, quotaRefill             string
	burst                                                        int64
	recoverable                                                  bool
	etag                                                         string
	// Regenerate.
	gracePeriod string
	// Listing (list, search, audit).
	query, pageToken string
	pageSize         int
	unusedDays       int
	all, stdin       bool
	// Validate.
	keyFile, clientIP string
	// Report-leak (--key-id also filters audit).
	keyIDFlag, action, reason string
	// Usage.
	since, start, end string

	positional []string
}

// keysCommand runs `keyward keys …`. Errors carry the documented exit code
// (see exitCode).
func keysCommand(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, keysUsage)
		return usageError("keys: no command given")
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, keysUsage)
		return nil
	}
	c := &keysCmd{sub: args[0], in: stdin, out: stdout}
	run, ok := c.register(stderr)
	if !ok {
		fmt.Fprint(stderr, keysUsage)
		return usageError("keys: unknown command %q", c.sub)
	}
	if err := c.parse(args[1:]); err != nil {
		return err
	}
	if c.output != "text" && c.output != "json" {
		return usageError("-o %q: want text or json", c.output)
	}
	return run(ctx)
}

// register declares the flags c.sub accepts and returns what runs it.
func (c *keysCmd) register(stderr io.Writer) (run func(context.Context) error, ok bool) {
	fs := flag.NewFlagSet("keyward keys "+c.sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: keyward keys %s [flags]  (keyward keys -h: every command and the exit codes)\n", c.sub)
		fs.PrintDefaults()
	}
	c.fs = fs
	fs.StringVar(&c.server, "server", envOr("KEYWARD_SERVER", "127.0.0.1:9090"), "gRPC address of a keyward server (KEYWARD_SERVER)")
	fs.StringVar(&c.output, "o", "text", "output format: text or json")
	fs.StringVar(&c.adminKeyFile, "admin-key-file", "", "file holding the admin key (default: $KEYWARD_ADMIN_KEY)")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "deadline of the call")
	fs.BoolVar(&c.tls, "tls", false, "connect with TLS, verifying the server against the system's CAs")
	fs.StringVar(&c.tlsCAFile, "tls-ca-file", "", "connect with TLS, verifying the server against this PEM CA bundle")
	keyFields := func() {
		fs.StringVar(&c.name, "name", "", "display name")
		fs.StringVar(&c.description, "description", "", "description")
		fs.StringVar(&c.scopes, "scopes", "", "comma-separated scopes")
		fs.StringVar(&c.metadata, "metadata", "", "comma-separated k=v metadata entries")
		fs.StringVar(&c.expireTime, "expire-time", "", `expiry as RFC 3339, e.g. 2030-01-31T00:00:00Z ("" with update: never)`)
		fs.StringVar(&c.ttl, "ttl", "", `instead of --expire-time: expire this long from now, e.g. 90d or 12h ("" with update: never)`)
		fs.StringVar(&c.allowedCIDRs, "allowed-cidrs", "", "comma-separated CIDR blocks or addresses the key may be used from")
		fs.StringVar(&c.rateLimit, "rate-limit", "", `N or N/PERIOD: requests per period (default 1s), e.g. 100/1s or 1000/1m ("" with update: none)`)
		fs.Int64Var(&c.burst, "burst", 0, "with --rate-limit: most requests at once (default: N)")
		fs.StringVar(&c.quota, "quota", "", `N: successful validations allowed, in all or per --quota-refill period ("" with update: none)`)
		fs.StringVar(&c.quotaRefill, "quota-refill", "", "with --quota: never (default), daily or monthly")
	}
	etag := func() { fs.StringVar(&c.etag, "etag", "", "act only if the key's etag still is this") }
	listing := func() {
		fs.IntVar(&c.pageSize, "page-size", 0, "entries per page (0: the server's default)")
		fs.StringVar(&c.pageToken, "page-token", "", "continue a listing where the previous page ended")
		fs.BoolVar(&c.all, "all", false, "follow every page")
	}
	switch c.sub {
	case "create":
		keyFields()
		fs.StringVar(&c.environment, "environment", "", "environment, e.g. live or test (default: the server's first)")
		fs.BoolVar(&c.recoverable, "recoverable", false, "also keep the secret encrypted, so that keys reveal can show it again (needs the server's master key)")
		return c.create, true
	case "update":
		keyFields()
		etag()
		return c.update, true
	case "list":
		fs.StringVar(&c.query, "query", "", "filter by name or key value")
		fs.IntVar(&c.unusedDays, "unused-days", 0, "only keys not used successfully for this many days (never used: since created)")
		listing()
		return c.list, true
	case "search":
		fs.BoolVar(&c.stdin, "stdin", false, "read the query (e.g. a pasted key) from stdin")
		listing()
		return c.search, true
	case "get":
		return c.get, true
	case "enable", "disable", "regenerate", "delete":
		etag()
		if c.sub == "regenerate" {
			fs.StringVar(&c.gracePeriod, "grace-period", "", "how long the old secret keeps working beside the new one, up to 7d (default: not at all)")
		}
		return c.stateChange, true
	case "reveal":
		return c.reveal, true
	case "report-leak":
		fs.StringVar(&c.keyIDFlag, "key-id", "", "the id of the leaked key")
		fs.BoolVar(&c.stdin, "stdin", false, "read the leaked secret from stdin")
		fs.StringVar(&c.action, "action", "", "disable or regenerate (a new secret at once, no grace period)")
		fs.StringVar(&c.reason, "reason", "", "why, for the audit trail, e.g. where the secret was found")
		return c.reportLeak, true
	case "audit":
		fs.StringVar(&c.keyIDFlag, "key-id", "", "only this key's events")
		listing()
		return c.audit, true
	case "usage":
		fs.StringVar(&c.since, "since", "", "the range from this long ago until now, e.g. 7d or 6h")
		fs.StringVar(&c.start, "start", "", "start of the range, RFC 3339 (default: 24 hours before --end)")
		fs.StringVar(&c.end, "end", "", "end of the range, RFC 3339 (default: now)")
		return c.usage, true
	case "validate":
		fs.StringVar(&c.keyFile, "key-file", "", "read the key from this file instead of stdin")
		fs.StringVar(&c.scopes, "scopes", "", "comma-separated scopes the key must have")
		fs.StringVar(&c.environment, "environment", "", "environment the key must belong to")
		fs.StringVar(&c.clientIP, "client-ip", "", "address of the caller presenting the key")
		return c.validate, true
	}
	return nil, false
}

// parse reads flags that may also come after positional arguments
// (`keys get ID --server …`): parse, set a positional aside, parse the rest.
func (c *keysCmd) parse(args []string) error {
	for rest := args; ; {
		if err := c.fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return &exitError{code: exitUsage, err: err}
		}
		if c.fs.NArg() == 0 {
			return nil
		}
		c.positional = append(c.positional, c.fs.Arg(0))
		rest = c.fs.Args()[1:]
	}
}

// given reports which flags were set on the command line.
func (c *keysCmd) given() map[string]bool {
	set := map[string]bool{}
	c.fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// keyID is the one KEY_ID argument of get, update, the state changes, reveal
// and usage.
func (c *keysCmd) keyID() (string, error) {
	if len(c.positional) != 1 || c.positional[0] == "" {
		return "", usageError("keys %s: want exactly one KEY_ID, got %d arguments", c.sub, len(c.positional))
	}
	return c.positional[0], nil
}

// noArgs rejects stray arguments, e.g. a key pasted where a flag was meant.
func (c *keysCmd) noArgs() error {
	if len(c.positional) > 0 {
		return usageError("keys %s: unexpected arguments (%d); see keyward keys -h", c.sub, len(c.positional))
	}
	return nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
