package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
)

// recorder is a KeyService that keeps the last request of each kind and
// what authorization it came with.
type recorder struct {
	keywardv1.UnimplementedKeyServiceServer
	update *keywardv1.UpdateKeyRequest
	create *keywardv1.CreateKeyRequest
	regen  *keywardv1.RegenerateKeyRequest
	leak   *keywardv1.ReportLeakedKeyRequest
	usage  *keywardv1.GetKeyUsageRequest
	list   *keywardv1.ListKeysRequest
	audits []*keywardv1.ListAuditEventsRequest
	auth   []string
}

func (r *recorder) CreateKey(ctx context.Context, req *keywardv1.CreateKeyRequest) (*keywardv1.CreateKeyResponse, error) {
	r.create = req
	return &keywardv1.CreateKeyResponse{Key: req.GetKey(), Secret: "kw_live_new"}, nil
}

func (r *recorder) RegenerateKey(ctx context.Context, req *keywardv1.RegenerateKeyRequest) (*keywardv1.RegenerateKeyResponse, error) {
	r.regen = req
	return &keywardv1.RegenerateKeyResponse{Key: &keywardv1.Key{KeyId: req.GetKeyId()}, Secret: "kw_live_new"}, nil
}

func (r *recorder) ReportLeakedKey(ctx context.Context, req *keywardv1.ReportLeakedKeyRequest) (*keywardv1.ReportLeakedKeyResponse, error) {
	r.leak = req
	return &keywardv1.ReportLeakedKeyResponse{Key: &keywardv1.Key{KeyId: "key_1"}}, nil
}

func (r *recorder) GetKeyUsage(ctx context.Context, req *keywardv1.GetKeyUsageRequest) (*keywardv1.GetKeyUsageResponse, error) {
	r.usage = req
	return &keywardv1.GetKeyUsageResponse{}, nil
}

func (r *recorder) ListKeys(ctx context.Context, req *keywardv1.ListKeysRequest) (*keywardv1.ListKeysResponse, error) {
	r.list = req
	return &keywardv1.ListKeysResponse{}, nil
}

// ListAuditEvents serves two pages of one event each.
func (r *recorder) ListAuditEvents(ctx context.Context, req *keywardv1.ListAuditEventsRequest) (*keywardv1.ListAuditEventsResponse, error) {
	r.audits = append(r.audits, req)
	if req.GetPageToken() == "" {
		return &keywardv1.ListAuditEventsResponse{AuditEvents: []*keywardv1.AuditEvent{{Sequence: 2, Action: "key.reveal"}}, NextPageToken: "p2"}, nil
	}
	return &keywardv1.ListAuditEventsResponse{AuditEvents: []*keywardv1.AuditEvent{{Sequence: 1, Action: "key.create"}}}, nil
}

// RevealKey refuses as the server does a key that is not recoverable, or
// too many reveals.
func (r *recorder) RevealKey(ctx context.Context, req *keywardv1.RevealKeyRequest) (*keywardv1.RevealKeyResponse, error) {
	if req.GetKeyId() == "key_busy" {
		st, _ := status.New(codes.ResourceExhausted, "too many reveals").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(1500 * time.Millisecond)})
		return nil, st.Err()
	}
	return nil, status.Error(codes.FailedPrecondition, "key is not recoverable")
}

func (r *recorder) UpdateKey(ctx context.Context, req *keywardv1.UpdateKeyRequest) (*keywardv1.UpdateKeyResponse, error) {
	r.update = req
	md, _ := metadata.FromIncomingContext(ctx)
	r.auth = md.Get("authorization")
	return &keywardv1.UpdateKeyResponse{Key: req.GetKey()}, nil
}

func (r *recorder) Validate(ctx context.Context, req *keywardv1.ValidateRequest) (*keywardv1.ValidateResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	r.auth = md.Get("authorization")
	return &keywardv1.ValidateResponse{Valid: false, Reason: keywardv1.ValidateResponse_REASON_NOT_FOUND}, nil
}

func startRecorder(t *testing.T, opts ...grpc.ServerOption) (*recorder, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	s := grpc.NewServer(opts...)
	keywardv1.RegisterKeyServiceServer(s, rec)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return rec, lis.Addr().String()
}

// TestUpdateMask: the update mask is exactly the flags given, so an empty
// flag clears its field and an absent one leaves it alone.
func TestUpdateMask(t *testing.T) {
	rec, addr := startRecorder(t)
	t.Setenv("KEYWARD_ADMIN_KEY", "admin-key-for-the-test-0123456789")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"ok/description-only", []string{"--description", "d"}, "description"},
		{"ok/clear-expiry", []string{"--expire-time", ""}, "expire_time"},
		{"ok/every-field", []string{"--name", "n", "--scopes", "", "--metadata", "a=b", "--expire-time", "2030-01-01T00:00:00Z", "--description", ""},
			"display_name,description,scopes,metadata,expire_time"},
		{"ok/ttl", []string{"--ttl", "90d"}, "expire_time"},
		{"ok/clear-policies", []string{"--allowed-cidrs", "", "--rate-limit", "", "--quota", ""}, "allowed_cidrs,rate_limit,quota"},
		{"ok/policies", []string{"--quota", "5", "--quota-refill", "daily", "--rate-limit", "10/1m", "--burst", "3", "--allowed-cidrs", "10.0.0.0/8"},
			"allowed_cidrs,rate_limit,quota"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"update", "key_1", "--server", addr, "--etag", "7"}, tc.args...)
			if err := keysCommand(context.Background(), args, nil, &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(rec.update.GetUpdateMask().GetPaths(), ","); got != tc.want {
				t.Errorf("mask %q, want %q", got, tc.want)
			}
			if rec.update.GetKey().GetKeyId() != "key_1" || rec.update.GetKey().GetEtag() != "7" {
				t.Errorf("key %v", rec.update.GetKey())
			}
			if len(rec.auth) != 1 || rec.auth[0] != "Bearer admin-key-for-the-test-0123456789" {
				t.Errorf("authorization %q", rec.auth)
			}
		})
	}
}

// TestUpdatePolicyValues: the policy flags arrive as the Key's fields; an
// empty value sends none, which clears the field named in the mask.
func TestUpdatePolicyValues(t *testing.T) {
	rec, addr := startRecorder(t)
	t.Setenv("KEYWARD_ADMIN_KEY", "admin-key-for-the-test-0123456789")
	update := func(args ...string) error {
		return keysCommand(context.Background(), append([]string{"update", "key_1", "--server", addr}, args...), nil, &bytes.Buffer{}, &bytes.Buffer{})
	}
	if err := update("--ttl", "1d12h", "--allowed-cidrs", "10.0.0.0/8, 192.0.2.1", "--rate-limit", "1000/1m", "--burst", "50",
		"--quota", "7", "--quota-refill", "monthly"); err != nil {
		t.Fatal(err)
	}
	k := rec.update.GetKey()
	if k.GetTtl().AsDuration() != 36*time.Hour || k.GetExpireTime() != nil ||
		strings.Join(k.GetAllowedCidrs(), ",") != "10.0.0.0/8,192.0.2.1" ||
		k.GetRateLimit().GetLimit() != 1000 || k.GetRateLimit().GetPeriod().AsDuration() != time.Minute || k.GetRateLimit().GetBurst() != 50 ||
		k.GetQuota().GetLimit() != 7 || k.GetQuota().GetRefill() != keywardv1.Quota_REFILL_MONTHLY {
		t.Errorf("update sent %v", k)
	}
	if err := update("--rate-limit", "", "--quota", "", "--allowed-cidrs", "", "--ttl", ""); err != nil {
		t.Fatal(err)
	}
	if k := rec.update.GetKey(); k.GetRateLimit() != nil || k.GetQuota() != nil || k.GetAllowedCidrs() != nil || k.GetTtl() != nil {
		t.Errorf("clearing sent %v", k)
	}
	for _, args := range [][]string{
		{"--ttl", "1d", "--expire-time", "2030-01-01T00:00:00Z"}, // one or the other
		{"--burst", "5"},            // a rate limit is replaced whole
		{"--quota-refill", "daily"}, // so is a quota
		{"--rate-limit", "ten"},
		{"--rate-limit", "10/fortnight"},
		{"--rate-limit", "10", "--burst", "-1"},
		{"--quota", "0"},
		{"--quota", "5", "--quota-refill", "weekly"},
		{"--ttl", "-1h"},
		{"--ttl", "soon"},
	} {
		rec.update = nil
		if err := update(args...); exitCode(err) != exitUsage || rec.update != nil {
			t.Errorf("update %q: exit code %d (%v), sent %v; want a usage error and no call", args, exitCode(err), err, rec.update)
		}
	}
}

// TestCreatePolicyFlags: create sends --recoverable and the policies.
func TestCreatePolicyFlags(t *testing.T) {
	rec, addr := startRecorder(t)
	t.Setenv("KEYWARD_ADMIN_KEY", "admin-key-for-the-test-0123456789")
	var out bytes.Buffer
	args := []string{"create", "--server", addr, "--name", "n", "--recoverable", "--expire-time", "2030-01-02T03:04:05Z",
		"--allowed-cidrs", "2001:db8::/32", "--rate-limit", "100/s", "--quota", "1000"}
	if err := keysCommand(context.Background(), args, nil, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	k := rec.create.GetKey()
	if !k.GetRecoverable() || k.GetExpireTime().AsTime().Format(time.RFC3339) != "2030-01-02T03:04:05Z" || k.GetTtl() != nil ||
		strings.Join(k.GetAllowedCidrs(), ",") != "2001:db8::/32" ||
		k.GetRateLimit().GetLimit() != 100 || k.GetRateLimit().GetPeriod().AsDuration() != time.Second || k.GetRateLimit().GetBurst() != 0 ||
		k.GetQuota().GetLimit() != 1000 || k.GetQuota().GetRefill() != keywardv1.Quota_REFILL_UNSPECIFIED {
		t.Errorf("create sent %v", k)
	}
	for _, row := range []string{"recoverable:  yes", "rate limit:   100/1s, burst 100", "quota:        0 of 1000 left", "allowed cidrs:  2001:db8::/32"} {
		if !strings.Contains(strings.Join(strings.Fields(out.String()), " "), strings.Join(strings.Fields(row), " ")) {
			t.Errorf("create (text) lacks %q:\n%s", row, &out)
		}
	}
	rec.create = nil
	if err := keysCommand(context.Background(), []string{"create", "--server", addr, "--name", "n", "--recoverable=false"}, nil, &out, &bytes.Buffer{}); err != nil ||
		rec.create.GetKey().GetRecoverable() || rec.create.GetKey().GetRateLimit() != nil || rec.create.GetKey().GetQuota() != nil {
		t.Errorf("create without policies: %v, sent %v", err, rec.create)
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"90d": 90 * 24 * time.Hour, "1d12h": 36 * time.Hour, "36h": 36 * time.Hour, "30m": 30 * time.Minute,
		"1h30m": 90 * time.Minute, "0d": 0, "-5m": -5 * time.Minute, " 7d ": 7 * 24 * time.Hour,
	} {
		if got, err := parseDuration("--ttl", in); err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "d", "1.5d", "-1d", "1d-5h", "1w", "soon", "99999999d", "36600d2562047h"} {
		if got, err := parseDuration("--ttl", in); exitCode(err) != exitUsage || !strings.Contains(err.Error(), "--ttl") {
			t.Errorf("parseDuration(%q) = %v, %v; want a usage error naming the flag", in, got, err)
		}
	}
}

func TestParseRateLimit(t *testing.T) {
	for _, tc := range []struct {
		in     string
		burst  int64
		limit  int64
		period time.Duration // 0: none sent, the server's default
	}{
		{"100", 0, 100, 0},
		{"100/1s", 0, 100, time.Second},
		{"1000/1m", 20, 1000, time.Minute},
		{"5/m", 0, 5, time.Minute},
		{"50000/d", 0, 50000, 24 * time.Hour},
		{"7/90s", 0, 7, 90 * time.Second},
	} {
		rl, err := parseRateLimit(tc.in, tc.burst, tc.burst != 0)
		if err != nil || rl.GetLimit() != tc.limit || rl.GetBurst() != tc.burst ||
			(rl.GetPeriod() == nil) != (tc.period == 0) || rl.GetPeriod().AsDuration() != tc.period {
			t.Errorf("parseRateLimit(%q, %d) = %v, %v", tc.in, tc.burst, rl, err)
		}
	}
	if rl, err := parseRateLimit("", 0, false); rl != nil || err != nil {
		t.Errorf(`parseRateLimit("") = %v, %v; want none`, rl, err)
	}
	for _, in := range []string{"0", "-3", "x", "100/", "100/0s", "100/-1m", "100/week", "1/2/3", "1e3"} {
		if rl, err := parseRateLimit(in, 0, false); exitCode(err) != exitUsage {
			t.Errorf("parseRateLimit(%q) = %v, %v; want a usage error", in, rl, err)
		}
	}
	if _, err := parseRateLimit("", 5, true); exitCode(err) != exitUsage {
		t.Errorf("--burst without --rate-limit: %v", err)
	}
}

func TestParseQuota(t *testing.T) {
	for _, tc := range []struct {
		in, refill string
		want       keywardv1.Quota_Refill
	}{
		{"5", "", keywardv1.Quota_REFILL_UNSPECIFIED},
		{"5", "never", keywardv1.Quota_REFILL_UNSPECIFIED},
		{"1000", "daily", keywardv1.Quota_REFILL_DAILY},
		{"1000", "Monthly", keywardv1.Quota_REFILL_MONTHLY},
	} {
		if q, err := parseQuota(tc.in, tc.refill, tc.refill != ""); err != nil || q.GetRefill() != tc.want || fmt.Sprint(q.GetLimit()) != tc.in {
			t.Errorf("parseQuota(%q, %q) = %v, %v", tc.in, tc.refill, q, err)
		}
	}
	for _, tc := range [][2]string{{"0", ""}, {"-1", ""}, {"lots", ""}, {"5", "weekly"}, {"", "daily"}} {
		if q, err := parseQuota(tc[0], tc[1], tc[1] != ""); exitCode(err) != exitUsage {
			t.Errorf("parseQuota(%q, %q) = %v, %v; want a usage error", tc[0], tc[1], q, err)
		}
	}
}

// TestRegenerateGracePeriod: --grace-period reaches the request; without
// it none is sent.
func TestRegenerateGracePeriod(t *testing.T) {
	rec, addr := startRecorder(t)
	t.Setenv("KEYWARD_ADMIN_KEY", "admin-key-for-the-test-0123456789")
	regen := func(args ...string) error {
		return keysCommand(context.Background(), append([]string{"regenerate", "key_1", "--server", addr}, args...), nil, &bytes.Buffer{}, &bytes.Buffer{})
	}
	if err := regen("--grace-period", "1d"); err != nil || rec.regen.GetGracePeriod().AsDuration() != 24*time.Hour {
		t.Errorf("--grace-period 1d: %v, sent %v", err, rec.regen)
	}
	if err := regen(); err != nil || rec.regen.GetGracePeriod() != nil {
		t.Errorf("no --grace-period: %v, sent %v", err, rec.regen)
	}
	for _, bad := range []string{"-1h", "a while"} {
		if err := regen("--grace-period", bad); exitCode(err) != exitUsage {
			t.Errorf("--grace-period %q: %v", bad, err)
		}
	}
	if err := keysCommand(context.Background(), []string{"disable", "key_1", "--server", addr, "--grace-period", "1h"}, nil, &bytes.Buffer{}, &bytes.Buffer{}); exitCode(err) != exitUsage {
		t.Errorf("disable --grace-period: %v, want a usage error", err)
	}
}

// TestReportLeakInput: the secret comes from stdin only, never argv, and is
// never echoed in an error.
func TestReportLeakInput(t *testing.T) {
	rec, addr := startRecorder(t)
	t.Setenv("KEYWARD_ADMIN_KEY", "admin-key-for-the-test-0123456789")
	const secret = "kw_live_leakedleakedleakedleakedleakedleakedleake"
	leak := func(stdin string, args ...string) error {
		rec.leak = nil
		args = append([]string{"report-leak", "--server", addr}, args...)
		return keysCommand(context.Background(), args, strings.NewReader(stdin), &bytes.Buffer{}, &bytes.Buffer{})
	}
	if err := leak(secret+"\n", "--stdin", "--action", "disable", "--reason", "found in a gist"); err != nil ||
		rec.leak.GetSecret() != secret || rec.leak.GetAction() != keywardv1.ReportLeakedKeyRequest_ACTION_DISABLE ||
		rec.leak.GetReason() != "found in a gist" {
		t.Errorf("--stdin: %v, sent %v", err, rec.leak)
	}
	if err := leak("", "--key-id", "key_1", "--action", "regenerate", "--reason", "r"); err != nil ||
		rec.leak.GetKeyId() != "key_1" || rec.leak.GetAction() != keywardv1.ReportLeakedKeyRequest_ACTION_REGENERATE {
		t.Errorf("--key-id: %v, sent %v", err, rec.leak)
	}
	for _, tc := range []struct {
		stdin string
		args  []string
	}{
		{"", []string{secret, "--action", "disable", "--reason", "r"}},             // the secret as an argument
		{"", []string{"--key-id", secret, "--action", "disable", "--reason", "r"}}, // a secret where the id goes
		{secret, []string{"--stdin", "--key-id", "key_1", "--action", "disable", "--reason", "r"}},
		{"", []string{"--action", "disable", "--reason", "r"}},               // no target
		{"", []string{"--stdin", "--action", "disable", "--reason", "r"}},    // nothing on stdin
		{secret, []string{"--stdin", "--reason", "r"}},                       // no action
		{secret, []string{"--stdin", "--action", "delete", "--reason", "r"}}, // not an action
		{secret, []string{"--stdin", "--action", "disable"}},                 // no reason
	} {
		err := leak(tc.stdin, tc.args...)
		if exitCode(err) != exitUsage || rec.leak != nil {
			t.Errorf("report-leak %q: exit code %d (%v), sent %v; want a usage error and no call", tc.args, exitCode(err), err, rec.leak)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("report-leak %q: the error echoes the secret: %v", tc.args, err)
		}
	}
}

// TestUsageRange: --since is a start before now; --start and --end are
// passed on; what is left out the server decides.
func TestUsageRange(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		since, start, end  string
		wantStart, wantEnd string // RFC 3339, "" for not sent
		fail               bool
	}{
		{wantStart: "", wantEnd: ""},
		{since: "7d", wantStart: "2029-12-26T03:00:00Z"},
		{since: "90m", wantStart: "2030-01-02T01:30:00Z"},
		{start: "2030-01-01T00:00:00Z", wantStart: "2030-01-01T00:00:00Z"},
		{start: "2030-01-01T00:00:00Z", end: "2030-01-01T12:00:00+01:00", wantStart: "2030-01-01T00:00:00Z", wantEnd: "2030-01-01T11:00:00Z"},
		{since: "1h", start: "2030-01-01T00:00:00Z", fail: true},
		{since: "1h", end: "2030-01-01T00:00:00Z", fail: true},
		{since: "0s", fail: true},
		{since: "yesterday", fail: true},
		{start: "2030-01-01", fail: true},
		{end: "noon", fail: true},
	} {
		c := &keysCmd{since: tc.since, start: tc.start, end: tc.end}
		req, err := c.usageRequest("key_1", now)
		if tc.fail {
			if exitCode(err) != exitUsage {
				t.Errorf("%+v: %v, want a usage error", tc, err)
			}
			continue
		}
		ts := func(p interface{ AsTime() time.Time }, set bool) string {
			if !set {
				return ""
			}
			return p.AsTime().UTC().Format(time.RFC3339)
		}
		if err != nil || req.GetKeyId() != "key_1" || ts(req.GetStartTime(), req.GetStartTime() != nil) != tc.wantStart ||
			ts(req.GetEndTime(), req.GetEndTime() != nil) != tc.wantEnd {
			t.Errorf("%+v: %v, %v", tc, req, err)
		}
	}
}

// TestAuditAndListFlags: audit --all follows the pages into one response,
// with --key-id on every request; list --unused-days reaches the request.
func TestAuditAndListFlags(t *testing.T) {
	rec, addr := startRecorder(t)
	t.Setenv("KEYWARD_ADMIN_KEY", "admin-key-for-the-test-0123456789")
	var out bytes.Buffer
	if err := keysCommand(context.Background(), []string{"audit", "--server", addr, "--key-id", "key_1", "--all", "-o", "json"}, nil, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	var got keywardv1.ListAuditEventsResponse
	if err := protojson.Unmarshal(out.Bytes(), &got); err != nil || len(got.GetAuditEvents()) != 2 || got.GetNextPageToken() != "" {
		t.Errorf("audit --all -o json (%v):\n%s", err, &out)
	}
	if len(rec.audits) != 2 || rec.audits[0].GetKeyId() != "key_1" || rec.audits[1].GetKeyId() != "key_1" || rec.audits[1].GetPageToken() != "p2" {
		t.Errorf("audit --all sent %v", rec.audits)
	}
	out.Reset()
	if err := keysCommand(context.Background(), []string{"audit", "--server", addr}, nil, &out, &bytes.Buffer{}); err != nil ||
		!strings.HasPrefix(out.String(), "TIME") || !strings.Contains(out.String(), "key.reveal") || !strings.Contains(out.String(), "--page-token p2") {
		t.Errorf("audit (text): %v\n%s", err, &out)
	}
	if err := keysCommand(context.Background(), []string{"list", "--server", addr, "--unused-days", "30"}, nil, &bytes.Buffer{}, &bytes.Buffer{}); err != nil ||
		rec.list.GetUnusedDays() != 30 {
		t.Errorf("list --unused-days 30: %v, sent %v", err, rec.list)
	}
	if err := keysCommand(context.Background(), []string{"list", "--server", addr, "--unused-days", "-1"}, nil, &bytes.Buffer{}, &bytes.Buffer{}); exitCode(err) != exitUsage {
		t.Errorf("list --unused-days -1: %v, want a usage error", err)
	}
}

// TestRevealExitCodes: a key that is not recoverable is a precondition
// (5); too many reveals is "retry later" (7) with the delay in the message.
func TestRevealExitCodes(t *testing.T) {
	_, addr := startRecorder(t)
	t.Setenv("KEYWARD_ADMIN_KEY", "admin-key-for-the-test-0123456789")
	err := keysCommand(context.Background(), []string{"reveal", "key_1", "--server", addr}, nil, &bytes.Buffer{}, &bytes.Buffer{})
	if exitCode(err) != exitConflict || !strings.Contains(err.Error(), "FailedPrecondition") {
		t.Errorf("reveal of a key that is not recoverable: exit code %d (%v), want %d", exitCode(err), err, exitConflict)
	}
	err = keysCommand(context.Background(), []string{"reveal", "key_busy", "--server", addr}, nil, &bytes.Buffer{}, &bytes.Buffer{})
	if exitCode(err) != exitUnavailable || !strings.Contains(err.Error(), "retry in 1.5s") {
		t.Errorf("too many reveals: exit code %d (%v), want %d naming the delay", exitCode(err), err, exitUnavailable)
	}
	if err := keysCommand(context.Background(), []string{"reveal", "--server", addr}, nil, &bytes.Buffer{}, &bytes.Buffer{}); exitCode(err) != exitUsage {
		t.Errorf("reveal without KEY_ID: %v", err)
	}
}

// TestPrintNewFields: the text output shows policies, rotation, the
// verdict's rate-limit state and usage compactly.
func TestPrintNewFields(t *testing.T) {
	k := &keywardv1.Key{
		KeyId: "key_1", DisplayName: "n", MaskedKey: "kw_live_abcdef…wxyz", State: keywardv1.Key_STATE_ACTIVE,
		AllowedCidrs: []string{"10.0.0.0/8", "192.0.2.1/32"},
		RateLimit:    &keywardv1.RateLimit{Limit: 1000, Period: durationpb.New(time.Minute), Burst: 50},
		Quota: &keywardv1.Quota{Limit: 1000, Refill: keywardv1.Quota_REFILL_DAILY, Remaining: 998,
			RefillTime: timestamppb.New(time.Date(2030, 1, 3, 0, 0, 0, 0, time.UTC))},
		Recoverable: true, PreviousMaskedKey: "kw_live_oldold…abcd", PreviousKeyExpireTime: timestamppb.New(time.Date(2030, 1, 2, 0, 0, 0, 0, time.UTC)),
		LastUsedTime: timestamppb.New(time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)),
	}
	text := func(m proto.Message) string {
		var out bytes.Buffer
		c := &keysCmd{output: "text", out: &out, positional: []string{"key_1"}}
		if err := c.print(m); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	rows := func(s string) map[string]string {
		m := map[string]string{}
		for _, line := range strings.Split(s, "\n") {
			if name, v, ok := strings.Cut(line, ":"); ok {
				m[name] = strings.TrimSpace(v)
			}
		}
		return m
	}
	got := rows(text(&keywardv1.GetKeyResponse{Key: k}))
	for name, want := range map[string]string{
		"allowed cidrs": "10.0.0.0/8,192.0.2.1/32",
		"rate limit":    "1000/1m, burst 50",
		"quota":         "998 of 1000 left, daily, refills at 2030-01-03T00:00:00Z",
		"recoverable":   "yes",
		"previous key":  "kw_live_oldold…abcd until 2030-01-02T00:00:00Z",
		"last used":     "2030-01-01T12:00:00Z",
	} {
		if got[name] != want {
			t.Errorf("get: %s: %q, want %q", name, got[name], want)
		}
	}
	if p := policiesText(k); p != "ip:10.0.0.0/8+1,rate:1000/1m,quota:998/1000/day,recoverable,prev:kw_live_oldold…abcd" {
		t.Errorf("policies cell %q", p)
	}
	if p := policiesText(&keywardv1.Key{}); p != "-" {
		t.Errorf("policies cell of a plain key %q", p)
	}
	list := text(&keywardv1.ListKeysResponse{Keys: []*keywardv1.Key{k}})
	if !strings.Contains(list, "POLICIES") || !strings.Contains(list, "quota:998/1000/day") {
		t.Errorf("list:\n%s", list)
	}

	uses := int64(4)
	got = rows(text(&keywardv1.ValidateResponse{Valid: true, Reason: keywardv1.ValidateResponse_REASON_VALID, Key: k, RemainingUses: &uses,
		RateLimit: &keywardv1.RateLimitStatus{Limit: 2, Remaining: 1, ResetAfter: durationpb.New(30 * time.Second)}}))
	if got["remaining uses"] != "4" || got["requests left"] != "1, limit 2, full again in 30s" || got["retry after"] != "" {
		t.Errorf("validate (valid): %v", got)
	}
	if _, ok := got["recoverable"]; ok {
		t.Errorf("validate shows recoverable, which a validated key does not tell")
	}
	got = rows(text(&keywardv1.ValidateResponse{Reason: keywardv1.ValidateResponse_REASON_RATE_LIMITED, RetryAfter: durationpb.New(29500 * time.Millisecond),
		RateLimit: &keywardv1.RateLimitStatus{Limit: 2, ResetAfter: durationpb.New(time.Minute)}}))
	if got["result"] != "refused" || got["retry after"] != "29.5s" || got["requests left"] != "0, limit 2, full again in 1m" {
		t.Errorf("validate (rate limited): %v", got)
	}

	hour := time.Date(2030, 1, 1, 10, 0, 0, 0, time.UTC)
	usage := text(&keywardv1.GetKeyUsageResponse{LastUsedTime: k.GetLastUsedTime(), Buckets: []*keywardv1.UsageBucket{
		{StartTime: timestamppb.New(hour), Counts: map[string]int64{"REASON_VALID": 3, "REASON_DISABLED": 2}},
		{StartTime: timestamppb.New(hour.Add(time.Hour)), Counts: map[string]int64{"REASON_RATE_LIMITED": 1}},
	}})
	lines := strings.Split(usage, "\n")
	want := [][]string{
		{"HOUR", "VALID", "DISABLED", "RATE_LIMITED", "TOTAL"},
		{"2030-01-01T10:00:00Z", "3", "2", "0", "5"},
		{"2030-01-01T11:00:00Z", "0", "0", "1", "1"},
	}
	for i, w := range want {
		if i >= len(lines) || strings.Join(strings.Fields(lines[i]), " ") != strings.Join(w, " ") {
			t.Errorf("usage line %d: want %q in:\n%s", i, w, usage)
		}
	}
	if rows(usage)["last used"] != "2030-01-01T12:00:00Z" {
		t.Errorf("usage: no last used row:\n%s", usage)
	}
	if u := text(&keywardv1.GetKeyUsageResponse{}); !strings.Contains(u, "no verifications") || rows(u)["last used"] != "never" {
		t.Errorf("usage of an unused key:\n%s", u)
	}
}

func TestDurationText(t *testing.T) {
	for d, want := range map[time.Duration]string{
		time.Second: "1s", time.Minute: "1m", 24 * time.Hour: "24h", 90 * time.Minute: "1h30m",
		1500 * time.Millisecond: "1.5s", time.Hour + time.Second: "1h0m1s",
	} {
		if got := durationText(d); got != want {
			t.Errorf("durationText(%v) = %q, want %q", d, got, want)
		}
	}
}

// TestValidateSendsNoAdminKey: Validate needs no credential, so the admin
// key is not sent to whatever answers on --server.
func TestValidateSendsNoAdminKey(t *testing.T) {
	rec, addr := startRecorder(t)
	t.Setenv("KEYWARD_ADMIN_KEY", "admin-key-for-the-test-0123456789")
	err := keysCommand(context.Background(), []string{"validate", "--server", addr}, strings.NewReader("kw_live_x\n"), &bytes.Buffer{}, &bytes.Buffer{})
	if exitCode(err) != exitRefused {
		t.Fatalf("exit code %d (%v), want %d", exitCode(err), err, exitRefused)
	}
	if len(rec.auth) != 0 {
		t.Errorf("validate sent authorization %q", rec.auth)
	}
}

func TestExitCodes(t *testing.T) {
	for c, want := range map[codes.Code]int{
		codes.Internal: exitFailure, codes.Unknown: exitFailure,
		codes.ResourceExhausted: exitFailure, // without a retry delay, e.g. a message over the size limit
		codes.InvalidArgument:   exitUsage, codes.NotFound: exitNotFound, codes.Aborted: exitConflict,
		codes.FailedPrecondition: exitConflict, codes.AlreadyExists: exitConflict,
		codes.Unauthenticated: exitUnauthorized, codes.PermissionDenied: exitUnauthorized,
		codes.Unavailable: exitUnavailable, codes.DeadlineExceeded: exitUnavailable,
	} {
		err := rpcError("keys get", status.Error(c, "boom"))
		if got := exitCode(err); got != want {
			t.Errorf("%v: exit code %d, want %d", c, got, want)
		}
		if !strings.Contains(err.Error(), c.String()) {
			t.Errorf("%v: message %q does not name the code", c, err)
		}
	}
	st, _ := status.New(codes.ResourceExhausted, "too many reveals").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(2 * time.Second)})
	if err := rpcError("keys reveal", st.Err()); exitCode(err) != exitUnavailable || !strings.Contains(err.Error(), "retry in 2s") {
		t.Errorf("ResourceExhausted with RetryInfo: exit code %d (%v), want %d naming the delay", exitCode(err), err, exitUnavailable)
	}
	if got := exitCode(usageError("x")); got != exitUsage {
		t.Errorf("usage error: exit code %d", got)
	}
}

func TestParseMetadata(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		fail     bool
	}{
		{"", "", false},
		{"a=b, c = d=e", "a=b,c=d=e", false},
		{"a=", "a=", false},
		{"a", "", true},
		{"=b", "", true},
		{"a=1,a=2", "", true},
	} {
		md, err := parseMetadata(tc.in)
		if (err != nil) != tc.fail {
			t.Errorf("%q: err %v", tc.in, err)
			continue
		}
		if got := metadataText(md); !tc.fail && got != tc.want {
			t.Errorf("%q: %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestReadSecret(t *testing.T) {
	if s, err := readSecret(strings.NewReader("  kw_live_abc \nrest"), "stdin"); err != nil || s != "kw_live_abc" {
		t.Errorf("got %q, %v", s, err)
	}
	long := strings.Repeat("x", maxSecretLen+10)
	if _, err := readSecret(strings.NewReader(long), "stdin"); exitCode(err) != exitUsage || strings.Contains(err.Error(), long[:20]) {
		t.Errorf("an overlong line: %v", err)
	}
}

func TestDialable(t *testing.T) {
	for in, want := range map[string]string{
		"0.0.0.0:8080": "127.0.0.1:8080", ":8080": "127.0.0.1:8080", "[::]:8080": "[::1]:8080",
		"10.1.2.3:80": "10.1.2.3:80", "localhost:1": "localhost:1",
	} {
		if got, err := dialable(in); err != nil || got != want {
			t.Errorf("dialable(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// TestTLS: --tls-ca-file verifies the server against that CA; without it a
// TLS server is not reached (plaintext is the default).
func TestTLS(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "keyward test"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	_, addr := startRecorder(t, grpc.Creds(credentials.NewServerTLSFromCert(&cert)))
	validate := func(extra ...string) error {
		args := append([]string{"validate", "--server", addr, "--timeout", "5s"}, extra...)
		return keysCommand(context.Background(), args, strings.NewReader("kw_live_x\n"), &bytes.Buffer{}, &bytes.Buffer{})
	}
	if err := validate("--tls-ca-file", caFile); exitCode(err) != exitRefused {
		t.Errorf("with --tls-ca-file: exit code %d (%v), want %d from the server's answer", exitCode(err), err, exitRefused)
	}
	if err := validate("--tls"); exitCode(err) != exitUnavailable {
		t.Errorf("--tls with the system's CAs: exit code %d (%v), want %d (certificate not trusted)", exitCode(err), err, exitUnavailable)
	}
	if err := validate(); exitCode(err) != exitUnavailable {
		t.Errorf("plaintext to a TLS server: exit code %d (%v), want %d", exitCode(err), err, exitUnavailable)
	}
}
