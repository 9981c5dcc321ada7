package main

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
)

func (c *keysCmd) create(ctx context.Context) error {
	if err := c.noArgs(); err != nil {
		return err
	}
	k := &keywardv1.Key{DisplayName: c.name, Description: c.description, Environment: c.environment, Recoverable: c.recoverable}
	if err := c.keyValues(k); err != nil {
		return err
	}
	return c.call(ctx, func(ctx context.Context, kc keywardv1.KeyServiceClient) (proto.Message, error) {
		return kc.CreateKey(ctx, &keywardv1.CreateKeyRequest{Key: k})
	})
}

// updateFlags maps update's flags to the Key fields they change. --burst
// and --quota-refill need --rate-limit and --quota: a policy is replaced
// whole.
var updateFlags = []struct{ flag, field string }{
	{"name", "display_name"},
	{"description", "description"},
	{"scopes", "scopes"},
	{"metadata", "metadata"},
	{"expire-time", "expire_time"},
	{"ttl", "expire_time"}, // the server sets expire_time from ttl
	{"allowed-cidrs", "allowed_cidrs"},
	{"rate-limit", "rate_limit"},
	{"quota", "quota"},
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
	k := &keywardv1.Key{KeyId: id, DisplayName: c.name, Description: c.description, Etag: c.etag}
	if err := c.keyValues(k); err != nil { // --expire-time with --ttl, --burst without --rate-limit, …
		return err
	}
	if len(mask.Paths) == 0 {
		return usageError("keys update: nothing to change: give --name, --description, --scopes, --metadata, " +
			"--expire-time, --ttl, --allowed-cidrs, --rate-limit or --quota")
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
	var grace *durationpb.Duration
	if c.gracePeriod != "" {
		d, err := parseDuration("--grace-period", c.gracePeriod)
		if err != nil {
			return err
		}
		if d < 0 {
			return usageError("--grace-period %q: must not be negative", c.gracePeriod)
		}
		grace = durationpb.New(d)
	}
	return c.call(ctx, func(ctx context.Context, kc keywardv1.KeyServiceClient) (proto.Message, error) {
		switch c.sub {
		case "enable":
			return kc.EnableKey(ctx, &keywardv1.EnableKeyRequest{KeyId: id, Etag: c.etag})
		case "disable":
			return kc.DisableKey(ctx, &keywardv1.DisableKeyRequest{KeyId: id, Etag: c.etag})
		case "regenerate":
			return kc.RegenerateKey(ctx, &keywardv1.RegenerateKeyRequest{KeyId: id, Etag: c.etag, GracePeriod: grace})
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
	if c.unusedDays < 0 || c.unusedDays > math.MaxInt32 {
		return usageError("--unused-days %d: want a number of days (0: no filter)", c.unusedDays)
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
		req := &keywardv1.ListKeysRequest{Query: query, PageSize: int32(c.pageSize), PageToken: c.pageToken, UnusedDays: int32(c.unusedDays)}
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

// reveal prints the secret of a recoverable key. The server audits and
// rate-limits it; a key that is not recoverable is FailedPrecondition.
func (c *keysCmd) reveal(ctx context.Context) error {
	id, err := c.keyID()
	if err != nil {
		return err
	}
	return c.call(ctx, func(ctx context.Context, kc keywardv1.KeyServiceClient) (proto.Message, error) {
		return kc.RevealKey(ctx, &keywardv1.RevealKeyRequest{KeyId: id})
	})
}

// leakActions are report-leak's --action values.
var leakActions = map[string]keywardv1.ReportLeakedKeyRequest_Action{
	"disable":    keywardv1.ReportLeakedKeyRequest_ACTION_DISABLE,
	"regenerate": keywardv1.ReportLeakedKeyRequest_ACTION_REGENERATE,
}

// reportLeak disables or regenerates the key of a leaked secret, read from
// stdin (never argv, where ps shows it), or of a key id.
func (c *keysCmd) reportLeak(ctx context.Context) error {
	if err := c.noArgs(); err != nil { // never echoes them: one may be the secret
		return err
	}
	action, ok := leakActions[c.action]
	if !ok {
		return usageError("keys report-leak: --action %q: want disable or regenerate", c.action)
	}
	if strings.TrimSpace(c.reason) == "" {
		return usageError("keys report-leak: give --reason, e.g. where the secret was found: the audit trail keeps it")
	}
	req := &keywardv1.ReportLeakedKeyRequest{Action: action, Reason: c.reason}
	switch {
	case c.stdin && c.keyIDFlag == "":
		secret, err := readSecret(c.in, "stdin")
		if err != nil {
			return err
		}
		if secret == "" {
			return usageError("keys report-leak --stdin: no secret on stdin")
		}
		req.Target = &keywardv1.ReportLeakedKeyRequest_Secret{Secret: secret}
	case !c.stdin && c.keyIDFlag != "":
		if looksLikeSecret(c.keyIDFlag) {
			return usageError("keys report-leak: --key-id takes a key id (key_…); pass a secret with --stdin, never as an argument")
		}
		req.Target = &keywardv1.ReportLeakedKeyRequest_KeyId{KeyId: c.keyIDFlag}
	default:
		return usageError("keys report-leak: give --key-id ID, or --stdin with the leaked secret on stdin")
	}
	return c.call(ctx, func(ctx context.Context, kc keywardv1.KeyServiceClient) (proto.Message, error) {
		return kc.ReportLeakedKey(ctx, req)
	})
}

// audit prints the audit trail, newest first: one page, or with --all every
// page as one response.
func (c *keysCmd) audit(ctx context.Context) error {
	if err := c.noArgs(); err != nil {
		return err
	}
	return c.call(ctx, func(ctx context.Context, kc keywardv1.KeyServiceClient) (proto.Message, error) {
		req := &keywardv1.ListAuditEventsRequest{KeyId: c.keyIDFlag, PageSize: int32(c.pageSize), PageToken: c.pageToken}
		all := &keywardv1.ListAuditEventsResponse{}
		for {
			resp, err := kc.ListAuditEvents(ctx, req)
			if err != nil {
				return nil, err
			}
			if !c.all {
				return resp, nil
			}
			all.AuditEvents = append(all.AuditEvents, resp.GetAuditEvents()...)
			if resp.GetNextPageToken() == "" {
				return all, nil
			}
			req.PageToken = resp.GetNextPageToken()
		}
	})
}

// usage prints a key's verifications by hour and outcome.
func (c *keysCmd) usage(ctx context.Context) error {
	id, err := c.keyID()
	if err != nil {
		return err
	}
	req, err := c.usageRequest(id, time.Now())
	if err != nil {
		return err
	}
	return c.call(ctx, func(ctx context.Context, kc keywardv1.KeyServiceClient) (proto.Message, error) {
		return kc.GetKeyUsage(ctx, req)
	})
}

// usageRequest turns --since, or --start and --end, into the range asked
// for; what is left unset the server decides (the 24 hours before now).
func (c *keysCmd) usageRequest(id string, now time.Time) (*keywardv1.GetKeyUsageRequest, error) {
	req := &keywardv1.GetKeyUsageRequest{KeyId: id}
	if c.since != "" {
		if c.start != "" || c.end != "" {
			return nil, usageError("keys usage: give --since, or --start and --end, not both")
		}
		d, err := parseDuration("--since", c.since)
		if err != nil {
			return nil, err
		}
		if d <= 0 {
			return nil, usageError("--since %q: want a positive duration, e.g. 7d", c.since)
		}
		req.StartTime = timestamppb.New(now.Add(-d))
		return req, nil
	}
	var err error
	if req.StartTime, err = parseTime("--start", c.start); err != nil {
		return nil, err
	}
	if req.EndTime, err = parseTime("--end", c.end); err != nil {
		return nil, err
	}
	return req, nil
}
