package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/keymat"
	"github.com/keyward/keyward/internal/testenv"
)

// TestRevocationSurvivesRedisRestartDuringTheWrite: Redis restarts, empty,
// while a DisableKey is between announcing its invalidation and committing.
// The restart takes the write's "pending" marker with it, so another
// instance, once resubscribed, may fill Redis and its in-process tier from
// the store with the key as it was before the commit. Once DisableKey
// returns OK, that instance must refuse the key all the same.
//
// The writer (keyward-0) reaches Postgres through a proxy adding latency,
// so its transaction takes seconds; keyward-1 reaches Postgres directly.
func TestRevocationSurvivesRedisRestartDuringTheWrite(t *testing.T) {
	dsn := testenv.Postgres(t)
	r := startRedis(t)
	slow := testenv.NewProxy(t, postgresHostPort(t, dsn))
	c := startClusterEach(t, []string{dsnVia(t, dsn, slow.Addr()), dsn}, []string{r.Addr, r.Addr})
	a, b := c.insts[0], c.insts[1]

	for attempt := range 3 {
		slow.SetLatency(0)
		id, secret := c.createKey(t, b, fmt.Sprintf("restart-mid-write-%d", attempt))
		for range 2 {
			for _, as := range c.validateAll(secret) {
				if as.err != nil || !as.resp.GetValid() {
					t.Fatalf("warming: %v", as)
				}
			}
		}
		confirmed := b.MsgCount(msgConfirmed)
		marker := "{kw}:k:" + fmt.Sprintf("%x", keymat.Hash(secret))

		slow.SetLatency(200 * time.Millisecond) // each query of keyward-0 takes 400 ms
		done := make(chan error, 1)
		sent := time.Now()
		go func() { _, err := c.mgmt(a, disable(id)); done <- err }()
		// Wait until the write has marked the key pending (it has announced
		// its invalidation next, and then commits), then restart Redis.
		deadline := time.Now().Add(5 * time.Second)
		for r.Do(t, "HGET", marker, "pc") != "1" {
			if time.Now().After(deadline) {
				t.Fatal("DisableKey did not mark the key pending within 5s")
			}
			time.Sleep(2 * time.Millisecond)
		}
		marked := time.Since(sent)
		time.Sleep(50 * time.Millisecond) // past the announcement (a few ms), well before the commit (seconds)
		r.Kill(t)
		r.Restart(t)
		restarted := time.Since(sent)
		if !b.WaitMsg(msgConfirmed, confirmed+1, 3*time.Second) {
			t.Fatalf("%s did not resubscribe within 3s of Redis restarting", b.name)
		}
		// keyward-1 trusts its in-process tier again; the write has not
		// committed yet: it may (and does) cache the key as still active.
		var early []string
		for range 2 {
			resp, err := b.validate(secret)
			early = append(early, fmt.Sprintf("valid=%v %v %v", resp.GetValid(), resp.GetReason(), err))
		}
		validatedAt := time.Since(sent)
		var err error
		select {
		case err = <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("DisableKey did not return within 20s")
		}
		returned := time.Since(sent)
		if err != nil {
			for _, l := range strings.Split(a.Log(), "\n") {
				if strings.Contains(l, `"WARN"`) {
					t.Logf("%s: %s", a.name, l)
				}
			}
			t.Logf("attempt %d: DisableKey failed (%v): not the case under test; again", attempt, err)
			continue
		}
		t.Logf("attempt %d: marked pending at %v, Redis restarted by %v, keyward-1 resubscribed and validated by %v (%v), DisableKey returned OK at %v",
			attempt, round(marked), round(restarted), round(validatedAt), early, round(returned))
		if validatedAt > returned {
			t.Logf("attempt %d: the write returned before keyward-1 validated: the race was not set up; again", attempt)
			continue
		}
		slow.SetLatency(0)
		for range 3 {
			for _, as := range c.validateAll(secret) {
				if as.err != nil || as.resp.GetValid() || as.resp.GetReason() != keywardv1.ValidateResponse_REASON_DISABLED {
					t.Errorf("after DisableKey returned OK: %v, want REASON_DISABLED", as)
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		return
	}
	t.Skip("could not set up the race in 3 attempts")
}

// startClusterEach starts one instance per (dsn, Redis address) pair, with
// one admin key, like startCluster.
func startClusterEach(t *testing.T, dsns, redisAddrs []string) *cluster {
	t.Helper()
	admin, err := keymat.Generate("live")
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{dsn: dsns[0], adminKey: admin.String()}
	for i := range dsns {
		s := startServerWith(t, serverOptions{DataDir: t.TempDir(), DSN: dsns[i], AdminKey: c.adminKey,
			Args: []string{"--redis-addr", redisAddrs[i]}})
		c.insts = append(c.insts, newInstance(t, s, i))
	}
	for _, in := range c.insts {
		if !in.WaitMsg(msgConfirmed, 1, 10*time.Second) {
			t.Fatalf("%s did not log %q within 10s of starting", in.name, msgConfirmed)
		}
	}
	return c
}
