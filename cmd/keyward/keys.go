package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
)

const keysUsage = `usage: keyward keys <create|list|get|enable|disable|regenerate|delete> [flags] [key_id]

  create --name N [--description D] [--environment E] [--scopes a,b]
  list [--query Q] [--page-size N]
  get|enable|disable|regenerate|delete KEY_ID

common flags: --server HOST:PORT (KEYWARD_SERVER, default 127.0.0.1:9090), -o text|json
The admin key is read from KEYWARD_ADMIN_KEY, or from --admin-key-file.
`

// keysCommand is a thin gRPC client of KeyService for scripts and operators.
func keysCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, keysUsage)
		return errors.New("keys: no subcommand given")
	}
	sub := args[0]
	fs := flag.NewFlagSet("keyward keys "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	server := fs.String("server", envOr("KEYWARD_SERVER", "127.0.0.1:9090"), "gRPC address of a keyward server")
	output := fs.String("o", "text", "output format: text or json")
	keyFile := fs.String("admin-key-file", "", "file holding the admin key (default: $KEYWARD_ADMIN_KEY)")
	name := fs.String("name", "", "display name (create)")
	description := fs.String("description", "", "description (create)")
	environment := fs.String("environment", "", "environment, e.g. live or test (create)")
	scopes := fs.String("scopes", "", "comma-separated scopes (create)")
	query := fs.String("query", "", "filter by name or key value (list)")
	pageSize := fs.Int("page-size", 0, "keys per page (list)")
	// Flags may come after the key id too (`keys get ID --server …`): parse,
	// set positionals aside, parse the rest again.
	var positional []string
	for rest := args[1:]; ; {
		if err := fs.Parse(rest); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if *output != "text" && *output != "json" {
		return fmt.Errorf("-o %q: want text or json", *output)
	}
	token := os.Getenv("KEYWARD_ADMIN_KEY")
	if *keyFile != "" {
		b, err := os.ReadFile(*keyFile)
		if err != nil {
			return fmt.Errorf("read admin key: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		return errors.New("no admin key: set KEYWARD_ADMIN_KEY or pass --admin-key-file")
	}
	conn, err := grpc.NewClient(*server, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("connect %s: %w", *server, err)
	}
	defer conn.Close()
	c := keywardv1.NewKeyServiceClient(conn)
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token), 30*time.Second)
	defer cancel()

	id := func() (string, error) {
		if len(positional) != 1 {
			return "", fmt.Errorf("keys %s: want exactly one KEY_ID", sub)
		}
		return positional[0], nil
	}
	var resp proto.Message
	switch sub {
	case "create":
		k := &keywardv1.Key{DisplayName: *name, Description: *description, Environment: *environment}
		if *scopes != "" {
			k.Scopes = strings.Split(*scopes, ",")
		}
		resp, err = c.CreateKey(ctx, &keywardv1.CreateKeyRequest{Key: k})
	case "list":
		resp, err = c.ListKeys(ctx, &keywardv1.ListKeysRequest{Query: *query, PageSize: int32(*pageSize)})
	case "get", "enable", "disable", "regenerate", "delete":
		var keyID string
		if keyID, err = id(); err != nil {
			return err
		}
		switch sub {
		case "get":
			resp, err = c.GetKey(ctx, &keywardv1.GetKeyRequest{KeyId: keyID})
		case "enable":
			resp, err = c.EnableKey(ctx, &keywardv1.EnableKeyRequest{KeyId: keyID})
		case "disable":
			resp, err = c.DisableKey(ctx, &keywardv1.DisableKeyRequest{KeyId: keyID})
		case "regenerate":
			resp, err = c.RegenerateKey(ctx, &keywardv1.RegenerateKeyRequest{KeyId: keyID})
		case "delete":
			resp, err = c.DeleteKey(ctx, &keywardv1.DeleteKeyRequest{KeyId: keyID})
		}
	default:
		fmt.Fprint(stderr, keysUsage)
		return fmt.Errorf("keys: unknown subcommand %q", sub)
	}
	if err != nil {
		return err
	}
	if *output == "json" {
		b, err := protojson.MarshalOptions{Multiline: true}.Marshal(resp)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(stdout, string(b))
		return err
	}
	printText(stdout, resp)
	return nil
}

func printText(w io.Writer, m proto.Message) {
	line := func(k *keywardv1.Key) {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", k.GetKeyId(), k.GetDisplayName(), k.GetMaskedKey(),
			strings.TrimPrefix(k.GetState().String(), "STATE_"), k.GetEnvironment())
	}
	switch r := m.(type) {
	case *keywardv1.CreateKeyResponse:
		line(r.GetKey())
		fmt.Fprintf(w, "secret: %s\n(shown once: store it now)\n", r.GetSecret())
	case *keywardv1.RegenerateKeyResponse:
		line(r.GetKey())
		fmt.Fprintf(w, "secret: %s\n(shown once: store it now)\n", r.GetSecret())
	case *keywardv1.ListKeysResponse:
		for _, k := range r.GetKeys() {
			line(k)
		}
		if r.GetNextPageToken() != "" {
			fmt.Fprintln(w, "(more keys: narrow with --query or raise --page-size)")
		}
	case interface{ GetKey() *keywardv1.Key }:
		line(r.GetKey())
	default:
		fmt.Fprintln(w, "ok")
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
