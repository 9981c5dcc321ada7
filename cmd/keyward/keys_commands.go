package main

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
)

func (c *keysCmd) create(ctx context.Context) error {
	if err := c.noArgs(); err != nil {
		return err
	}
	k := &keywardv1.Key{DisplayName: c.name, Description: c.description, Environment: c.environment}
	var err error
	if k.Scopes, k.Metadata, k.ExpireTime, err = c.keyValues(); err != nil {
		return err
	}
	return c.call(ctx, func(ctx context.Context, kc keywardv1.KeyServiceClient) (proto.Message, error) {
		return kc.CreateKey(ctx, &keywardv1.CreateKeyRequest{Key: k})
	})
}

// updateFlags maps update's flags to the Key fields they change.
var updateFlags = []struct{ flag, field string }{
	{"name", "display_name"},
	{"description", "description"},
	{"scopes", "scopes"},
	{"metadata", "metadata"},
	{"expire-time", "expire_time"},
}

// update sends exactly the fields whose flags were given, as the update
// mask, so `--description ""` clears the description and every other field
// stays as it is.
func (c *keysCmd) update(ctx context.Context) error {
	id, err := c.keyID()
	if err != nil {
		return err
	}
	given := c.given()
	mask := &fieldmaskpb.FieldMask{}
	for _, f := range updateFlags {
		if given[f.flag] {
			mask.Paths = append(mask.Paths, f.field)
		}
	}
	if len(mask.Paths) == 0 {
		return usageError("keys update: nothing to change: give --name, --description, --scopes, --metadata or --expire-time")
	}
	k := &keywardv1.Key{KeyId: id, DisplayName: c.name, Description: c.description, Etag: c.etag}
	if k.Scopes, k.Metadata, k.ExpireTime, err = c.keyValues(); err != nil {
		return err
	}
	return c.call(ctx, func(ctx context.Context, kc keywardv1.KeyServiceClient) (proto.Message, error) {
		return kc.UpdateKey(ctx, &keywardv1.UpdateKeyRequest{Key: k, UpdateMask: mask})
	})
}

func (c *keysCmd) get(ctx context.Context) error {
	id, err := c.keyID()
	if err != nil {
		return err
	}
	return c.call(ctx, func(ctx context.Context, kc keywardv1.KeyServiceClient) (proto.Message, error) {
		return kc.GetKey(ctx, &keywardv1.GetKeyRequest{KeyId: id})
	})
}

// stateChange runs enable, disable, regenerate and delete: one key id and
// an optional etag each.
func (c *keysCmd) stateChange(ctx context.Context) error {
	id, err := c.keyID()
	if err != nil {
		return err
	}
	return c.call(ctx, func(ctx context.Context, kc keywardv1.KeyServiceClient) (proto.Message, error) {
		switch c.sub {
		case "enable":
			return kc.EnableKey(ctx, &keywardv1.EnableKeyRequest{KeyId: id, Etag: c.etag})
		case "disable":
			return kc.DisableKey(ctx, &keywardv1.DisableKeyRequest{KeyId: id, Etag: c.etag})
		case "regenerate":
			return kc.RegenerateKey(ctx, &keywardv1.RegenerateKeyRequest{KeyId: id, Etag: c.etag})
		case "delete":
			return kc.DeleteKey(ctx, &keywardv1.DeleteKeyRequest{KeyId: id, Etag: c.etag})
		}
		return nil, fmt.Errorf("keys %s: not a state change", c.sub)
	})
}

func (c *keysCmd) list(ctx context.Context) error {
	if err := c.noArgs(); err != nil {
		return err
	}
	return c.listKeys(ctx, c.query)
}

// search is list with the query from an argument or, for a pasted key,
// from stdin: gRPC carries it in the request body either way, but an
// argument is visible to every user of the machine in ps.
func (c *keysCmd) search(ctx context.Context) error {
	var query string
	switch {
	case c.stdin && len(c.positional) == 0:
		q, err := readSecret(c.in, "stdin")
		if err != nil {
			return err
		}
		query = q
	case !c.stdin && len(c.positional) == 1:
		query = c.positional[0]
	default:
		return usageError("keys search: give one QUERY argument or --stdin")
	}
	if query == "" {
		return usageError("keys search: empty query; use keys list to see every key")
	}
	return c.listKeys(ctx, query)
}

// listKeys prints one page, or with --all every page as one response.
func (c *keysCmd) listKeys(ctx context.Context, query string) error {
	return c.call(ctx, func(ctx context.Context, kc keywardv1.KeyServiceClient) (proto.Message, error) {
		req := &keywardv1.ListKeysRequest{Query: query, PageSize: int32(c.pageSize), PageToken: c.pageToken}
		all := &keywardv1.ListKeysResponse{}
		for {
			resp, err := kc.ListKeys(ctx, req)
			if err != nil {
				return nil, err
			}
			if !c.all {
				return resp, nil
			}
			all.Keys = append(all.Keys, resp.GetKeys()...)
			if resp.GetNextPageToken() == "" {
				return all, nil
			}
			req.PageToken = resp.GetNextPageToken()
		}
	})
}

// validate asks the server about a key the way a service would. A refused
// key is an answer, printed like a valid one, with its own exit code.
func (c *keysCmd) validate(ctx context.Context) error {
	if err := c.noArgs(); err != nil {
		return err
	}
	var (
		secret string
		err    error
	)
	if c.keyFile != "" {
		secret, err = readSecretFile(c.keyFile)
	} else {
		secret, err = readSecret(c.in, "stdin")
	}
	if err != nil {
		return err
	}
	if secret == "" {
		return usageError("keys validate: no key given: pipe it into stdin or pass --key-file")
	}
	kc, ctx, done, err := c.client(ctx, false)
	if err != nil {
		return err
	}
	defer done()
	resp, err := kc.Validate(ctx, &keywardv1.ValidateRequest{
		Key: secret, RequiredScopes: splitComma(c.scopes), Environment: c.environment, ClientIp: c.clientIP,
	})
	if err != nil {
		return rpcError("keys validate", err)
	}
	if err := c.print(resp); err != nil {
		return err
	}
	if !resp.GetValid() {
		return &exitError{code: exitRefused, err: fmt.Errorf("key refused: %s", resp.GetReason())}
	}
	return nil
}
