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
	case *keywardv1.RevealKeyResponse:
		k := r.GetKey()
		fmt.Fprintf(tw, "key id:\t%s\nname:\t%s\nkey:\t%s\nsecret:\t%s\n", k.GetKeyId(), oneLine(k.GetDisplayName()), k.GetMaskedKey(), r.GetSecret())
	case *keywardv1.ReportLeakedKeyResponse:
		printKey(tw, r.GetKey())
		if r.GetSecret() != "" {
			printSecret(tw, r.GetSecret())
		}
	case *keywardv1.ListKeysResponse:
		printList(tw, r)
	case *keywardv1.ListAuditEventsResponse:
		printAudit(tw, r)
	case *keywardv1.GetKeyUsageResponse:
		printUsage(tw, r)
	case *keywardv1.DeleteKeyResponse:
		fmt.Fprintf(tw, "deleted\t%s\n", c.positional[0])
	case *keywardv1.ValidateResponse:
		verdict := "refused"
		if r.GetValid() {
			verdict = "valid"
		}
		fmt.Fprintf(tw, "result:\t%s\nreason:\t%s\n", verdict, r.GetReason())
		if d := r.GetRetryAfter(); d != nil {
			fmt.Fprintf(tw, "retry after:\t%s\n", durationText(d.AsDuration()))
		}
		if rl := r.GetRateLimit(); rl != nil {
			fmt.Fprintf(tw, "requests left:\t%d, limit %d, full again in %s\n", rl.GetRemaining(), rl.GetLimit(), durationText(rl.GetResetAfter().AsDuration()))
		}
		if r.RemainingUses != nil {
			fmt.Fprintf(tw, "remaining uses:\t%d\n", r.GetRemainingUses())
		}
		if r.GetKey() != nil {
			printKeyRows(tw, keyRows(r.GetKey(), false)) // a validated key does not tell whether it is recoverable
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
	printKeyRows(w, keyRows(k, true))
}

func keyRows(k *keywardv1.Key, recoverable bool) [][2]string {
	rows := [][2]string{
		{"key id", k.GetKeyId()},
		{"name", k.GetDisplayName()},
		{"description", k.GetDescription()},
		{"environment", k.GetEnvironment()},
		{"state", stateName(k.GetState())},
		{"key", k.GetMaskedKey()},
		{"previous key", previousKeyText(k)},
		{"scopes", strings.Join(k.GetScopes(), ",")},
		{"metadata", metadataText(k.GetMetadata())},
		{"created", timeText(k.GetCreateTime(), "")},
		{"updated", timeText(k.GetUpdateTime(), "")},
		{"expires", timeText(k.GetExpireTime(), "never")},
		{"allowed cidrs", orText(strings.Join(k.GetAllowedCidrs(), ","), "any")},
		{"rate limit", orText(rateText(k.GetRateLimit(), true), "none")},
		{"quota", orText(quotaText(k.GetQuota()), "none")},
	}
	if recoverable {
		rows = append(rows, [2]string{"recoverable", yesNo(k.GetRecoverable())})
	}
	return append(rows, [2]string{"last used", timeText(k.GetLastUsedTime(), "never")}, [2]string{"etag", k.GetEtag()})
}

func printKeyRows(w io.Writer, rows [][2]string) {
	for _, r := range rows {
		fmt.Fprintf(w, "%s:\t%s\n", r[0], r[1])
	}
}

// previousKeyText is the replaced secret of a rotation still in its grace
// period: "kw_live_abc123…wxyz until 2030-01-31T00:00:00Z", or "none".
func previousKeyText(k *keywardv1.Key) string {
	if k.GetPreviousMaskedKey() == "" {
		return "none"
	}
	return k.GetPreviousMaskedKey() + " until " + timeText(k.GetPreviousKeyExpireTime(), "?")
}

// rateText is "100/1s" (with long: ", burst 200"); "" for no rate limit.
func rateText(rl *keywardv1.RateLimit, long bool) string {
	if rl == nil {
		return ""
	}
	period := time.Second
	if p := rl.GetPeriod(); p != nil {
		period = p.AsDuration()
	}
	s := fmt.Sprintf("%d/%s", rl.GetLimit(), durationText(period))
	if long {
		burst := rl.GetBurst()
		if burst == 0 {
			burst = rl.GetLimit()
		}
		s += fmt.Sprintf(", burst %d", burst)
	}
	return s
}

// refillNames are --quota-refill's words for a quota's refill.
var refillNames = map[keywardv1.Quota_Refill]string{
	keywardv1.Quota_REFILL_UNSPECIFIED: "never",
	keywardv1.Quota_REFILL_DAILY:       "daily",
	keywardv1.Quota_REFILL_MONTHLY:     "monthly",
}

// quotaText is "4 of 5 left" or "998 of 1000 left, daily, refills at T";
// "" for no quota.
func quotaText(q *keywardv1.Quota) string {
	if q == nil {
		return ""
	}
	s := fmt.Sprintf("%d of %d left", q.GetRemaining(), q.GetLimit())
	if q.GetRefill() != keywardv1.Quota_REFILL_UNSPECIFIED {
		s += ", " + refillName(q.GetRefill())
		if t := q.GetRefillTime(); t != nil {
			s += ", refills at " + timeText(t, "")
		}
	}
	return s
}

func refillName(r keywardv1.Quota_Refill) string {
	if n, ok := refillNames[r]; ok {
		return n
	}
	return r.String()
}

// policiesText sums up a key's policies and rotation for one table cell:
// "ip:10.0.0.0/8+1,rate:100/1s,quota:4/5,recoverable,prev:kw_live_abc…wxyz";
// "-" for none.
func policiesText(k *keywardv1.Key) string {
	var parts []string
	if c := k.GetAllowedCidrs(); len(c) > 0 {
		s := "ip:" + c[0]
		if len(c) > 1 {
			s += fmt.Sprintf("+%d", len(c)-1)
		}
		parts = append(parts, s)
	}
	if rl := k.GetRateLimit(); rl != nil {
		parts = append(parts, "rate:"+rateText(rl, false))
	}
	if q := k.GetQuota(); q != nil {
		s := fmt.Sprintf("quota:%d/%d", q.GetRemaining(), q.GetLimit())
		switch q.GetRefill() {
		case keywardv1.Quota_REFILL_DAILY:
			s += "/day"
		case keywardv1.Quota_REFILL_MONTHLY:
			s += "/month"
		}
		parts = append(parts, s)
	}
	if k.GetRecoverable() {
		parts = append(parts, "recoverable")
	}
	if p := k.GetPreviousMaskedKey(); p != "" {
		parts = append(parts, "prev:"+p)
	}
	return orText(strings.Join(parts, ","), "-")
}

func printSecret(w io.Writer, secret string) {
	fmt.Fprintf(w, "secret:\t%s\n", secret)
	fmt.Fprintln(w, "(the secret is shown only now: store it)")
}

func printList(w io.Writer, r *keywardv1.ListKeysResponse) {
	fmt.Fprintln(w, "KEY ID\tNAME\tKEY\tSTATE\tENVIRONMENT\tSCOPES\tEXPIRES\tLAST USED\tPOLICIES")
	for _, k := range r.GetKeys() {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.GetKeyId(), oneLine(k.GetDisplayName()), k.GetMaskedKey(),
			stateName(k.GetState()), k.GetEnvironment(), strings.Join(k.GetScopes(), ","),
			timeText(k.GetExpireTime(), "never"), timeText(k.GetLastUsedTime(), "never"), policiesText(k))
	}
	if t := r.GetNextPageToken(); t != "" {
		fmt.Fprintf(w, "(more keys: --page-token %s, or --all)\n", t)
	}
}

// maxDetail bounds an audit event's detail in the table; -o json has it whole.
const maxDetail = 60

func printAudit(w io.Writer, r *keywardv1.ListAuditEventsResponse) {
	fmt.Fprintln(w, "TIME\tSEQ\tACTION\tKEY\tACTOR\tSOURCE\tCHANGED\tDETAIL")
	for _, e := range r.GetAuditEvents() {
		detail := []rune(oneLine(e.GetDetail()))
		if len(detail) > maxDetail {
			detail = append(detail[:maxDetail-1], '…')
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", timeText(e.GetEventTime(), "-"), e.GetSequence(),
			orText(e.GetAction(), "-"), orText(e.GetKeyId(), "-"), orText(e.GetActorKeyId(), "-"),
			orText(e.GetSourceAddress(), "-"), orText(strings.Join(e.GetChangedFields(), ","), "-"), orText(string(detail), "-"))
	}
	if t := r.GetNextPageToken(); t != "" {
		fmt.Fprintf(w, "(more events: --page-token %s, or --all)\n", t)
	}
}

// printUsage writes one row per hour with a column per outcome seen in the
// range (REASON_ left out), a total, and when the key was last used.
func printUsage(w io.Writer, r *keywardv1.GetKeyUsageResponse) {
	seen := map[string]bool{}
	for _, b := range r.GetBuckets() {
		for reason := range b.GetCounts() {
			seen[reason] = true
		}
	}
	reasons := make([]string, 0, len(seen))
	for reason := range seen {
		reasons = append(reasons, reason)
	}
	sort.Slice(reasons, func(i, j int) bool { // VALID first, then by name
		vi, vj := reasons[i] == "REASON_VALID", reasons[j] == "REASON_VALID"
		if vi != vj {
			return vi
		}
		return reasons[i] < reasons[j]
	})
	if len(r.GetBuckets()) == 0 {
		fmt.Fprintln(w, "(no verifications in the range)")
	} else {
		header := []string{"HOUR"}
		for _, reason := range reasons {
			header = append(header, strings.TrimPrefix(reason, "REASON_"))
		}
		fmt.Fprintln(w, strings.Join(append(header, "TOTAL"), "\t"))
		for _, b := range r.GetBuckets() {
			row := []string{timeText(b.GetStartTime(), "-")}
			var total int64
			for _, reason := range reasons {
				n := b.GetCounts()[reason]
				total += n
				row = append(row, fmt.Sprint(n))
			}
			fmt.Fprintln(w, strings.Join(append(row, fmt.Sprint(total)), "\t"))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "last used:\t%s\n", timeText(r.GetLastUsedTime(), "never"))
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

// durationText is d without zero units: 1m rather than 1m0s, 24h, 1h30m.
func durationText(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func orText(s, empty string) string {
	if s == "" {
		return empty
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// oneLine keeps a name with tabs or newlines from breaking the table.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
