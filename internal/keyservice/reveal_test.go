package keyservice_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/keymat"
	"github.com/keyward/keyward/internal/testenv"
	"github.com/keyward/keyward/internal/testserver"
)

// newMasterKey returns a fresh master key, base64, and its raw bytes.
func newMasterKey(t *testing.T) (string, []byte) {
	t.Helper()
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(raw), raw
}

// forEachStoreWith is forEachStore for servers started with o.
func forEachStoreWith(t *testing.T, o testserver.Options, test func(t *testing.T, srv *testserver.Server)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		test(t, testserver.Start(t, o))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		o := o
		o.PostgresDSN = testenv.Postgres(t)
		test(t, testserver.Start(t, o))
	})
}

func (f *fixture) reveal(id string) *keywardv1.RevealKeyResponse {
	f.t.Helper()
	resp, err := f.c.RevealKey(f.ctx, &keywardv1.RevealKeyRequest{KeyId: id})
	if err != nil {
		f.t.Fatalf("RevealKey: %v", err)
	}
	return resp
}

func TestRevealKey(t *testing.T) {
	master, _ := newMasterKey(t)
	forEachStoreWith(t, testserver.Options{MasterKey: master}, func(t *testing.T, srv *testserver.Server) {
		f := newFixture(t, srv)
		created := f.create(&keywardv1.Key{DisplayName: "recoverable", Recoverable: true})
		id := created.GetKey().GetKeyId()
		if !created.GetKey().GetRecoverable() {
			t.Fatal("ok/created: recoverable = false")
		}
		got, err := f.c.GetKey(f.ctx, &keywardv1.GetKeyRequest{KeyId: id})
		if err != nil || !got.GetKey().GetRecoverable() {
			t.Fatalf("ok/get: %v %v", got, err)
		}

		t.Run("ok/round-trip", func(t *testing.T) {
			r := f.reveal(id)
			if r.GetSecret() != created.GetSecret() || r.GetKey().GetKeyId() != id || !r.GetKey().GetRecoverable() {
				t.Fatalf("RevealKey returned another secret or key: %v", r.GetKey())
			}
			e := f.lastEvent(id)
			if e.GetAction() != "key.reveal" || !strings.HasPrefix(e.GetActorKeyId(), "key_") || e.GetAfter() != nil {
				t.Fatalf("audit event: %v", e)
			}
		})
		t.Run("ok/validate-hides-recoverable", func(t *testing.T) {
			if v := f.validate(created.GetSecret()); !v.GetValid() || v.GetKey().GetRecoverable() {
				t.Fatalf("Validate: %v", v)
			}
		})
		t.Run("ok/after-regenerate", func(t *testing.T) {
			// With a grace period both secrets work, but only the new one is kept.
			regen, err := f.c.RegenerateKey(f.ctx, &keywardv1.RegenerateKeyRequest{KeyId: id, GracePeriod: durationpb.New(time.Hour)})
			if err != nil {
				t.Fatal(err)
			}
			if !regen.GetKey().GetRecoverable() {
				t.Fatal("regenerate dropped recoverable")
			}
			if r := f.reveal(id); r.GetSecret() != regen.GetSecret() {
				t.Fatal("RevealKey after RegenerateKey did not return the new secret")
			}
			f.wantReason(created.GetSecret(), keywardv1.ValidateResponse_REASON_VALID) // in its grace period
		})
		t.Run("refused/not-recoverable", func(t *testing.T) {
			plain := f.create(&keywardv1.Key{DisplayName: "plain"})
			if plain.GetKey().GetRecoverable() {
				t.Fatal("a key created without recoverable is recoverable")
			}
			_, err := f.c.RevealKey(f.ctx, &keywardv1.RevealKeyRequest{KeyId: plain.GetKey().GetKeyId()})
			wantCode(t, err, codes.FailedPrecondition, "not recoverable")
		})
		t.Run("refused/not-found", func(t *testing.T) {
			_, err := f.c.RevealKey(f.ctx, &keywardv1.RevealKeyRequest{KeyId: "key_01JZZZZZZZZZZZZZZZZZZZZZZZ"})
			wantCode(t, err, codes.NotFound, "")
			_, err = f.c.RevealKey(f.ctx, &keywardv1.RevealKeyRequest{})
			wantCode(t, err, codes.InvalidArgument, "key_id")
		})
		t.Run("refused/no-admin", func(t *testing.T) {
			_, err := f.c.RevealKey(testserver.WithBearer(context.Background(), created.GetSecret()), &keywardv1.RevealKeyRequest{KeyId: id})
			if code := status.Code(err); code != codes.PermissionDenied && code != codes.Unauthenticated {
				t.Fatalf("RevealKey with a non-admin key: %v", err)
			}
		})
		t.Run("refused/recoverable-is-immutable", func(t *testing.T) {
			_, err := f.c.UpdateKey(f.ctx, &keywardv1.UpdateKeyRequest{
				Key:        &keywardv1.Key{KeyId: id, Recoverable: false},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"recoverable"}},
			})
			wantCode(t, err, codes.InvalidArgument, "immutable")
			// Sent back unchanged (a client PATCHing a whole key), it is accepted.
			if _, err := f.c.UpdateKey(f.ctx, &keywardv1.UpdateKeyRequest{
				Key:        &keywardv1.Key{KeyId: id, Recoverable: true, Description: "kept"},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"recoverable", "description"}},
			}); err != nil {
				t.Fatal(err)
			}
		})
	})
}

// lastEvent returns key id's newest audit event.
func (f *fixture) lastEvent(id string) *keywardv1.AuditEvent {
	f.t.Helper()
	resp, err := f.c.ListAuditEvents(f.ctx, &keywardv1.ListAuditEventsRequest{KeyId: id, PageSize: 1})
	if err != nil || len(resp.GetAuditEvents()) != 1 {
		f.t.Fatalf("ListAuditEvents: %v %v", resp, err)
	}
	return resp.GetAuditEvents()[0]
}

func TestRecoverableNeedsMasterKey(t *testing.T) {
	forEachStore(t, func(t *testing.T, srv *testserver.Server) {
		f := newFixture(t, srv)
		_, err := f.c.CreateKey(f.ctx, &keywardv1.CreateKeyRequest{Key: &keywardv1.Key{DisplayName: "r", Recoverable: true}})
		wantCode(t, err, codes.FailedPrecondition, "KEYWARD_MASTER_KEY")
		plain := f.create(&keywardv1.Key{DisplayName: "plain"})
		_, err = f.c.RevealKey(f.ctx, &keywardv1.RevealKeyRequest{KeyId: plain.GetKey().GetKeyId()})
		wantCode(t, err, codes.FailedPrecondition, "master key")
	})
}

func TestRevealRateLimit(t *testing.T) {
	master, _ := newMasterKey(t)
	f := newFixture(t, testserver.Start(t, testserver.Options{MasterKey: master}))
	id := f.create(&keywardv1.Key{DisplayName: "r", Recoverable: true}).GetKey().GetKeyId()
	for range 10 {
		f.reveal(id)
	}
	_, err := f.c.RevealKey(f.ctx, &keywardv1.RevealKeyRequest{KeyId: id})
	wantCode(t, err, codes.ResourceExhausted, "retry in")
	var retry *errdetails.RetryInfo
	for _, d := range status.Convert(err).Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			retry = r
		}
	}
	if d := retry.GetRetryDelay().AsDuration(); retry == nil || d <= 0 || d > time.Minute {
		t.Fatalf("RetryInfo: %v", retry)
	}
}

// lockedBuffer collects a server's log lines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestNoSecretsInLogs drives every path that handles a secret or the master
// key, at debug level, and searches the log for them.
func TestNoSecretsInLogs(t *testing.T) {
	master, raw := newMasterKey(t)
	var log lockedBuffer
	srv := testserver.Start(t, testserver.Options{MasterKey: master, Log: &log})
	f := newFixture(t, srv)
	var secrets []string
	created := f.create(&keywardv1.Key{DisplayName: "r", Recoverable: true})
	id := created.GetKey().GetKeyId()
	secrets = append(secrets, created.GetSecret(), f.reveal(id).GetSecret())
	regen, err := f.c.RegenerateKey(f.ctx, &keywardv1.RegenerateKeyRequest{KeyId: id})
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, regen.GetSecret())
	f.validate(regen.GetSecret())
	leak, err := f.c.ReportLeakedKey(f.ctx, &keywardv1.ReportLeakedKeyRequest{
		Target: &keywardv1.ReportLeakedKeyRequest_Secret{Secret: regen.GetSecret()},
		Action: keywardv1.ReportLeakedKeyRequest_ACTION_REGENERATE, Reason: "pasted in chat: " + regen.GetSecret(),
	})
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, leak.GetSecret(), f.reveal(id).GetSecret())
	unknown, _ := keymat.Generate("live")
	secrets = append(secrets, unknown.String())
	_, err = f.c.ReportLeakedKey(f.ctx, &keywardv1.ReportLeakedKeyRequest{
		Target: &keywardv1.ReportLeakedKeyRequest_Secret{Secret: unknown.String()},
		Action: keywardv1.ReportLeakedKeyRequest_ACTION_DISABLE,
	})
	wantCode(t, err, codes.NotFound, "")
	if strings.Contains(err.Error(), unknown.String()) {
		t.Fatal("NotFound repeats the secret")
	}
	if _, err := f.c.RevealKey(testserver.WithBearer(context.Background(), leak.GetSecret()), &keywardv1.RevealKeyRequest{KeyId: id}); err == nil {
		t.Fatal("a non-admin key revealed a secret")
	}
	srv.Conn.Close()

	text := log.String()
	if !strings.Contains(text, "key revealed") {
		t.Fatalf("the log was not captured:\n%s", text)
	}
	for _, s := range append(secrets, master, hex.EncodeToString(raw), base64.RawURLEncoding.EncodeToString(raw), srv.AdminKey) {
		if strings.Contains(text, s) {
			t.Fatalf("the log contains a secret or the master key:\n%s", text)
		}
	}
	for _, s := range secrets {
		// Nor the part of a secret that a masked key does not show.
		if strings.Contains(text, s[14:40]) {
			t.Fatalf("the log contains part of a secret:\n%s", text)
		}
	}
}
