package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyward/keyward/internal/testenv"
)

// TestAuditVerify: the audit trail of a real run verifies with `keyward
// audit verify`, and an event edited in the database afterwards is caught
// and named.
func TestAuditVerify(t *testing.T) {
	dsn := testenv.Postgres(t)
	s := startServerWith(t, serverOptions{DataDir: t.TempDir(), DSN: dsn})
	key, _ := s.createKey(t, `{"displayName": "audited"}`)
	id, _ := key["keyId"].(string)
	for _, step := range []struct{ method, path, body string }{
		{"PATCH", "/v1/keys/" + id + "?update_mask=description", `{"description": "x"}`},
		{"POST", "/v1/keys/" + id + ":disable", `{}`},
		{"POST", "/v1/keys/" + id + ":regenerate", `{}`},
		{"DELETE", "/v1/keys/" + id, ``},
	} {
		if r := s.call(t, step.method, step.path, step.body, true); r.Status != 200 {
			t.Fatalf("%s %s: %d %s", step.method, step.path, r.Status, r.Body)
		}
	}
	// Over REST the source is the HTTP client's address, which the
	// in-process gateway passes on.
	ev := s.call(t, "GET", "/v1/auditEvents?key_id="+id, "", true)
	var events struct {
		AuditEvents []struct{ Action, SourceAddress, ActorKeyId string }
	}
	if err := json.Unmarshal(ev.Body, &events); err != nil || len(events.AuditEvents) != 5 {
		t.Fatalf("GET /v1/auditEvents?key_id=%s: %v %s", id, err, ev.Body)
	}
	for _, e := range events.AuditEvents {
		if e.SourceAddress != "127.0.0.1" || e.ActorKeyId == "" {
			t.Errorf("%s: source %q, actor %q; want 127.0.0.1 and the admin key", e.Action, e.SourceAddress, e.ActorKeyId)
		}
	}
	s.Stop(t)

	out, errOut, code, _ := runKeyward(t, time.Minute, "audit", "verify", "--postgres-dsn", dsn)
	// The bootstrap admin key's creation, then the five writes above.
	if code != 0 || !strings.Contains(out, "audit trail verified: 6 events") {
		t.Fatalf("audit verify on an intact trail: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	rawDB(t, dsn, func(ctx context.Context, conn *pgx.Conn) {
		if _, err := conn.Exec(ctx, `UPDATE audit_events SET actor = 'someone-else' WHERE seq = 4`); err != nil {
			t.Fatal(err)
		}
	})
	out, errOut, code, _ = runKeyward(t, time.Minute, "audit", "verify", "--postgres-dsn", dsn)
	if code == 0 || !strings.Contains(errOut, "event 4 was altered") {
		t.Fatalf("audit verify after editing event 4: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	rawDB(t, dsn, func(ctx context.Context, conn *pgx.Conn) {
		if _, err := conn.Exec(ctx, `DELETE FROM audit_events WHERE seq = 4`); err != nil {
			t.Fatal(err)
		}
	})
	_, errOut, code, _ = runKeyward(t, time.Minute, "audit", "verify", "--postgres-dsn", dsn)
	if code == 0 || !strings.Contains(errOut, "event 5 follows event 3") {
		t.Fatalf("audit verify after deleting event 4: exit %d\nstderr: %s", code, errOut)
	}
}
