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
              [--metadata k=v,...] [--expire-time RFC3339]
  list        [--query Q] [--page-size N] [--page-token T] [--all]
  search      QUERY | --stdin  [--page-size N] [--page-token T] [--all]
              by name or by a pasted key; pass a key with --stdin, never as an argument
  get         KEY_ID
  update      KEY_ID [--name N] [--description D] [--scopes a,b] [--metadata k=v,...]
              [--expire-time RFC3339] [--etag E]
              only the flags given change; an empty value clears (--expire-time "": never)
  enable      KEY_ID [--etag E]
  disable     KEY_ID [--etag E]
  regenerate  KEY_ID [--etag E]
  delete      KEY_ID [--etag E]
  validate    [--key-file F] [--scopes a,b] [--environment E] [--client-ip IP]
              reads the key from stdin (or F), never from arguments: ps shows those

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
  5  conflict: --etag does not match, or the key changed meanwhile (Aborted,
     FailedPrecondition, AlreadyExists)
  6  not authorised: no, a wrong or a non-admin key (Unauthenticated, PermissionDenied)
  7  the server or its store is unavailable, or the call timed out: retrying is safe
     (Unavailable, DeadlineExceeded)
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
	etag                                                         string
	// Listing (list, search).
	query, pageToken string
	pageSize         int
	all, stdin       bool
	// Validate.
	keyFile, clientIP string

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
	}
	etag := func() { fs.StringVar(&c.etag, "etag", "", "act only if the key's etag still is this") }
	listing := func() {
		fs.IntVar(&c.pageSize, "page-size", 0, "keys per page (0: the server's default)")
		fs.StringVar(&c.pageToken, "page-token", "", "continue a listing where the previous page ended")
		fs.BoolVar(&c.all, "all", false, "follow every page")
	}
	switch c.sub {
	case "create":
		keyFields()
		fs.StringVar(&c.environment, "environment", "", "environment, e.g. live or test (default: the server's first)")
		return c.create, true
	case "update":
		keyFields()
		etag()
		return c.update, true
	case "list":
		fs.StringVar(&c.query, "query", "", "filter by name or key value")
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
		return c.stateChange, true
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

// keyID is the one KEY_ID argument of get, update and the state changes.
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
