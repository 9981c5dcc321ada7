package e2e

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"strconv"
	"testing"
	"time"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
)

// TestUsageSurvivesRestart validates keys over REST and gRPC, reads the
// counts back from GET /v1/keys/{key_id}/usage once they are flushed, and
// again after a restart on the same data dir (and Postgres database);
// verifications made just before a graceful stop are flushed by it.
func TestUsageSurvivesRestart(t *testing.T) {
	t.Parallel()
	for _, mode := range storeModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			opts := serverOptions{DataDir: t.TempDir(), DSN: mode.dsn(t), Args: []string{"--usage-flush-interval", "500ms"}}
			first := startServerWith(t, opts)
			active, activeSecret := first.createKey(t, `{"displayName": "busy"}`)
			disabled, disabledSecret := first.createKey(t, `{"displayName": "sleeper"}`)
			idle, _ := first.createKey(t, `{"displayName": "idle"}`)
			first.call(t, "POST", "/v1/keys/"+keyID(disabled)+":disable", "", true).want(t, http.StatusOK)

			kc := keyClient(t, first)
			grpcValidate := func(secret string, want keywardv1.ValidateResponse_Reason) {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				r, err := kc.Validate(ctx, &keywardv1.ValidateRequest{Key: secret})
				if err != nil || r.GetReason() != want {
					t.Fatalf("gRPC Validate: %v (%v), want %v", r.GetReason(), err, want)
				}
			}
			restValidate := func(secret, want string) {
				t.Helper()
				if r := first.validate(t, secret); r["reason"] != want {
					t.Fatalf("REST validate: %v, want %s", r, want)
				}
			}
			start := time.Now().Truncate(time.Microsecond)
			for i := range 37 {
				if i%2 == 0 {
					restValidate(activeSecret, "REASON_VALID")
				} else {
					grpcValidate(activeSecret, keywardv1.ValidateResponse_REASON_VALID)
				}
			}
			for i := range 5 {
				if i%2 == 0 {
					restValidate(disabledSecret, "REASON_DISABLED")
				} else {
					grpcValidate(disabledSecret, keywardv1.ValidateResponse_REASON_DISABLED)
				}
			}
			end := time.Now()

			want := map[string]map[string]int64{
				keyID(active):   {"REASON_VALID": 37},
				keyID(disabled): {"REASON_DISABLED": 5},
				keyID(idle):     {},
			}
			waitUsage(t, first, want, 10*time.Second)
			time.Sleep(1500 * time.Millisecond) // three more flushes add nothing
			checkUsage(t, first, want)
			lastUsed := usageOf(t, first, keyID(active)).lastUsed
			if lastUsed.Before(start) || lastUsed.After(end) {
				t.Errorf("lastUsedTime %v, want between %v and %v", lastUsed, start, end)
			}
			for _, id := range []string{keyID(disabled), keyID(idle)} {
				if lu := usageOf(t, first, id).lastUsed; !lu.IsZero() {
					t.Errorf("key %s was never valid, but its lastUsedTime is %v", id, lu)
				}
			}
			k := first.call(t, "GET", "/v1/keys/"+keyID(active), "", true).want(t, http.StatusOK)
			if got, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(k["lastUsedTime"])); !got.Equal(lastUsed) {
				t.Errorf("GET /v1/keys/%s: lastUsedTime %v, want %v", keyID(active), k["lastUsedTime"], lastUsed)
			}

			// Not yet flushed when the stop begins: the stop flushes them.
			for range 3 {
				restValidate(activeSecret, "REASON_VALID")
			}
			first.Stop(t)
			want[keyID(active)]["REASON_VALID"] = 40

			second := startServerWith(t, opts)
			checkUsage(t, second, want)
			if lu := usageOf(t, second, keyID(active)).lastUsed; !lu.After(lastUsed) {
				t.Errorf("after the restart: lastUsedTime %v, want after %v", lu, lastUsed)
			}
			// unused_days: every key here is younger than a day.
			page := second.call(t, "GET", "/v1/keys?unused_days=1", "", true).want(t, http.StatusOK)
			if ks, _ := page["keys"].([]any); len(ks) != 0 {
				t.Errorf("GET /v1/keys?unused_days=1 listed %d keys, want none", len(ks))
			}
			second.call(t, "GET", "/v1/keys?unused_days=-1", "", true).want(t, http.StatusBadRequest)
		})
	}
}

type keyUsage struct {
	counts   map[string]int64 // summed over the buckets
	lastUsed time.Time
}

// usageOf reads GET /v1/keys/{id}/usage (the last 24 hours).
func usageOf(t *testing.T, s *server, id string) keyUsage {
	t.Helper()
	body := s.call(t, "GET", "/v1/keys/"+id+"/usage", "", true).want(t, http.StatusOK)
	out := keyUsage{counts: map[string]int64{}}
	buckets, _ := body["buckets"].([]any)
	for _, b := range buckets {
		bm, _ := b.(map[string]any)
		counts, _ := bm["counts"].(map[string]any)
		for reason, v := range counts {
			n, err := strconv.ParseInt(fmt.Sprint(v), 10, 64) // int64 is a JSON string
			if err != nil {
				t.Fatalf("usage of %s: count %v: %v", id, v, err)
			}
			out.counts[reason] += n
		}
	}
	if lu, ok := body["lastUsedTime"].(string); ok {
		var err error
		if out.lastUsed, err = time.Parse(time.RFC3339Nano, lu); err != nil {
			t.Fatalf("usage of %s: lastUsedTime %q: %v", id, lu, err)
		}
	}
	return out
}

// waitUsage waits until every key's counts are as wanted.
func waitUsage(t *testing.T, s *server, want map[string]map[string]int64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for id, w := range want {
		for !maps.Equal(usageOf(t, s, id).counts, w) && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
	}
	checkUsage(t, s, want)
}

func checkUsage(t *testing.T, s *server, want map[string]map[string]int64) {
	t.Helper()
	for id, w := range want {
		if got := usageOf(t, s, id).counts; !maps.Equal(got, w) {
			t.Errorf("usage of %s: %v, want %v", id, got, w)
		}
	}
}
