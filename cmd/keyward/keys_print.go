package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
)

// jsonOut matches the REST API's JSON: every field present, so a script
// reads `valid: false` or an empty list rather than a missing field.
var jsonOut = protojson.MarshalOptions{Multiline: true, EmitUnpopulated: true}

// print writes resp as -o asks: protojson, or tables for people.
func (c *keysCmd) print(resp proto.Message) error {
	if c.output == "json" {
		b, err := jsonOut.Marshal(resp)
		if err != nil {
			return fmt.Errorf("encode %s: %w", resp.ProtoReflect().Descriptor().Name(), err)
		}
		_, err = fmt.Fprintln(c.out, string(b))
		return err
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	switch r := resp.(type) {
	case *keywardv1.CreateKeyResponse:
		printKey(tw, r.GetKey())
		printSecret(tw, r.GetSecret())
	case *keywardv1.RegenerateKeyResponse:
		printKey(tw, r.GetKey())
		printSecret(tw, r.GetSecret())
	case *keywardv1.ListKeysResponse:
		printList(tw, r)
	case *keywardv1.DeleteKeyResponse:
		fmt.Fprintf(tw, "deleted\t%s\n", c.positional[0])
	case *keywardv1.ValidateResponse:
		verdict := "refused"
		if r.GetValid() {
			verdict = "valid"
		}
		fmt.Fprintf(tw, "result:\t%s\nreason:\t%s\n", verdict, r.GetReason())
		if r.GetKey() != nil {
			printKey(tw, r.GetKey())
		}
	case interface{ GetKey() *keywardv1.Key }: // get, update, enable, disable
		printKey(tw, r.GetKey())
	default:
		fmt.Fprintln(tw, "ok")
	}
	return tw.Flush()
}

// printKey shows one key as name: value rows, etag included so a script
// or person can pass it to --etag.
func printKey(w io.Writer, k *keywardv1.Key) {
	rows := [][2]string{
		{"key id", k.GetKeyId()},
		{"name", k.GetDisplayName()},
		{"description", k.GetDescription()},
		{"environment", k.GetEnvironment()},
		{"state", stateName(k.GetState())},
		{"key", k.GetMaskedKey()},
		{"scopes", strings.Join(k.GetScopes(), ",")},
		{"metadata", metadataText(k.GetMetadata())},
		{"created", timeText(k.GetCreateTime(), "")},
		{"updated", timeText(k.GetUpdateTime(), "")},
		{"expires", timeText(k.GetExpireTime(), "never")},
		{"last used", timeText(k.GetLastUsedTime(), "never")},
		{"etag", k.GetEtag()},
	}
	for _, r := range rows {
		fmt.Fprintf(w, "%s:\t%s\n", r[0], r[1])
	}
}

func printSecret(w io.Writer, secret string) {
	fmt.Fprintf(w, "secret:\t%s\n", secret)
	fmt.Fprintln(w, "(the secret is shown only now: store it)")
}

func printList(w io.Writer, r *keywardv1.ListKeysResponse) {
	fmt.Fprintln(w, "KEY ID\tNAME\tKEY\tSTATE\tENVIRONMENT\tSCOPES\tEXPIRES\tLAST USED")
	for _, k := range r.GetKeys() {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.GetKeyId(), oneLine(k.GetDisplayName()), k.GetMaskedKey(),
			stateName(k.GetState()), k.GetEnvironment(), strings.Join(k.GetScopes(), ","),
			timeText(k.GetExpireTime(), "never"), timeText(k.GetLastUsedTime(), "never"))
	}
	if t := r.GetNextPageToken(); t != "" {
		fmt.Fprintf(w, "(more keys: --page-token %s, or --all)\n", t)
	}
}

func stateName(s keywardv1.Key_State) string {
	return strings.TrimPrefix(s.String(), "STATE_")
}

func timeText(ts *timestamppb.Timestamp, unset string) string {
	if ts == nil {
		return unset
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}

func metadataText(md map[string]string) string {
	pairs := make([]string, 0, len(md))
	for k, v := range md {
		pairs = append(pairs, k+"="+v)
	}
	sort.Strings(pairs)
	return strings.Join(pairs, ",")
}

// oneLine keeps a name with tabs or newlines from breaking the table.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
