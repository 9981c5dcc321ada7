package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/keymat"
	"github.com/keyward/keyward/internal/testenv"
)

// TestFaults takes Redis, Postgres or an instance away under load and
// brings it back. Each case runs two `keyward serve` processes (in-process
// cache on) on its own database and its own redis-server, with goroutines
// validating a fixed set of keys — active, disabled and never issued — on
// both instances throughout, counting wrong answers (always a failure) and
// errors (per phase; where they are allowed is said in each case). The load
// calls with a 1 s deadline, as a service authenticating its own requests
// would: an answer that takes longer is an error.
func TestFaults(t *testing.T) {
	t.Run("redis-stopped-and-restarted", testRedisKilled)
	t.Run("redis-paused", testRedisPaused)
	t.Run("postgres-unreachable", testPostgresCut)
	t.Run("postgres-stalled", testPostgresStalled)
	t.Run("instance-paused-during-revocation", testInstancePaused)
}

// faultSetup is what every case starts from.
type faultSetup struct {
	c    *cluster
	a, b *instance
	keys []loadKey
}

func setupFaults(t *testing.T, dsn string, r *redisProc) *faultSetup {
	t.Helper()
	c := startCluster(t, 2, dsn, r)
	return &faultSetup{c: c, a: c.insts[0], b: c.insts[1], keys: loadKeys(t, c, 8, 4, 4)}
}

// probe is a key a case revokes or tries to change, warm on every instance.
func (f *faultSetup) probe(t *testing.T, name string) (id, secret string) {
	t.Helper()
	id, secret = f.c.createKey(t, f.a, name+"-"+randomName(t))
	f.wantValid(t, "warming "+name, secret, true)
	f.wantValid(t, "warming "+name, secret, true)
	return id, secret
}

// wantValid validates secret on every instance at once and asserts the
// answer: valid, or refused (for any reason), without errors.
func (f *faultSetup) wantValid(t *testing.T, when, secret string, valid bool) []answer {
	t.Helper()
	as := f.c.validateAll(secret)
	for _, a := range as {
		switch {
		case a.err != nil:
			t.Errorf("%s: Validate on %s: %v", when, a.inst.name, a.err)
		case a.resp.GetValid() != valid:
			t.Errorf("%s: Validate on %s: valid=%v (%v), want valid=%v", when, a.inst.name, a.resp.GetValid(), a.resp.GetReason(), valid)
		}
	}
	return as
}

// wantCode asserts that a management call failed with code.
func wantCode(t *testing.T, what string, took time.Duration, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Errorf("%s: %v (after %v), want %v", what, err, took.Round(time.Millisecond), code)
		return
	}
	t.Logf("%s: %v after %v, as it should", what, code, round(took))
}

// readyz fetches /readyz from in: the status and the body's fields. A
// failed request is reported with t.Errorf (it may run in a goroutine) and
// gives status 0.
func readyz(t *testing.T, in *instance) (int, map[string]string, time.Duration) {
	t.Helper()
	t0 := time.Now()
	resp, err := httpClient.Get(in.BaseURL + "/readyz")
	if err != nil {
		t.Errorf("GET /readyz on %s: %v", in.name, err)
		return 0, nil, time.Since(t0)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var m map[string]string
	if err := json.Unmarshal(body, &m); err != nil {
		t.Errorf("GET /readyz on %s: body %q is not a JSON object of strings", in.name, body)
		return 0, nil, time.Since(t0)
	}
	return resp.StatusCode, m, time.Since(t0)
}

func sleepUntil(at time.Time) { time.Sleep(time.Until(at)) }

// loadDeadline is the load's per-call deadline.
const loadDeadline = time.Second

// assertNoErrors fails t if the load saw any error in the named phases.
func assertNoErrors(t *testing.T, l *load, phases ...string) {
	t.Helper()
	for _, p := range phases {
		if s := l.stats(p); s.errors() > 0 {
			t.Errorf("load phase %q: %d Validate errors %v, want none", p, s.errors(), s.errs)
		}
	}
}

// assertOnlyErrors fails t if the load saw, in phase, errors other than
// those listed ("<kind>/<code>").
func assertOnlyErrors(t *testing.T, l *load, phase string, allowed ...string) {
	t.Helper()
	ok := map[string]bool{}
	for _, a := range allowed {
		ok[a] = true
	}
	for k, n := range l.stats(phase).errs {
		if !ok[k] {
			t.Errorf("load phase %q: %d Validate errors %s, want none of that kind (allowed: %v)", phase, n, k, allowed)
		}
	}
}

// testRedisKilled: Redis is SIGKILLed mid-load. Validate must go on
// answering from the store — after at most 1 s to notice, without a single
// error — and writes must fail with Unavailable without changing anything.
// Redis comes back empty on the same port: each instance resubscribes and
// trusts its in-process tier again by itself, writes work, and a revocation
// is at once in force on the other instance.
func testRedisKilled(t *testing.T) {
	dsn := testenv.Postgres(t)
	r := startRedis(t)
	f := setupFaults(t, dsn, r)
	c, a, b := f.c, f.a, f.b
	probeID, probeSecret := f.probe(t, "outage-probe")
	afterID, afterSecret := f.probe(t, "after-probe")
	before := c.getKey(t, a, probeID)

	l := startLoad(t, c, f.keys, 4, loadDeadline, "before")
	time.Sleep(time.Second)
	lost := []int{a.MsgCount(msgLost), b.MsgCount(msgLost)}
	confirmed := []int{a.MsgCount(msgConfirmed), b.MsgCount(msgConfirmed)}

	l.setPhase("down, first 1s")
	time.Sleep(10 * time.Millisecond) // calls started before it end first
	killed := time.Now()
	r.Kill(t)
	for i, in := range []*instance{a, b} {
		if !in.WaitMsg(msgLost, lost[i]+1, time.Second) {
			t.Errorf("%s did not log %q within 1s of Redis dying", in.name, msgLost)
		}
	}
	sleepUntil(killed.Add(time.Second))
	l.setPhase("down")

	// Writes need Redis to coordinate the caches: they must fail, cleanly.
	outageName := "outage-create-" + randomName(t)
	took, err := c.mgmt(a, disable(probeID))
	wantCode(t, "DisableKey with Redis down", took, err, codes.Unavailable)
	var regenerated string
	took, err = c.mgmt(b, regenerate(probeID, &regenerated))
	wantCode(t, "RegenerateKey with Redis down", took, err, codes.Unavailable)
	took, err = c.mgmt(a, deleteKey(probeID))
	wantCode(t, "DeleteKey with Redis down", took, err, codes.Unavailable)
	took, err = c.mgmt(b, func(ctx context.Context, kc keywardv1.KeyServiceClient) error {
		_, err := kc.CreateKey(ctx, &keywardv1.CreateKeyRequest{Key: &keywardv1.Key{DisplayName: outageName}})
		return err
	})
	wantCode(t, "CreateKey with Redis down", took, err, codes.Unavailable)
	// Nothing was written: GetKey and ListKeys read the store.
	if got := c.getKey(t, b, probeID); got.GetState() != keywardv1.Key_STATE_ACTIVE || got.GetEtag() != before.GetEtag() {
		t.Errorf("after failed writes with Redis down: key is %v etag %q, want unchanged (%v, %q)",
			got.GetState(), got.GetEtag(), before.GetState(), before.GetEtag())
	}
	if n := c.countNamed(t, a, outageName); n != 0 {
		t.Errorf("a CreateKey that failed with Redis down left %d keys behind", n)
	}
	f.wantValid(t, "with Redis down, the key whose writes failed", probeSecret, true)
	code, body, _ := readyz(t, a)
	t.Logf("/readyz with Redis down: %d %v", code, body)
	// Validate still works from the store, so the instance stays ready.
	if code != http.StatusOK || body["redis"] != "unavailable" || body["store"] != "ok" {
		t.Errorf("/readyz with Redis down: %d %v, want 200 redis=unavailable store=ok", code, body)
	}
	sleepUntil(killed.Add(3 * time.Second))

	l.setPhase("restarting")
	restarted := time.Now()
	r.Restart(t)
	for i, in := range []*instance{a, b} {
		if !in.WaitMsg(msgConfirmed, confirmed[i]+1, 5*time.Second) {
			t.Errorf("%s did not log %q within 5s of Redis coming back", in.name, msgConfirmed)
			continue
		}
		t.Logf("%s trusts its in-process tier again %v after Redis restarted", in.name, round(time.Since(restarted)))
	}
	// Commands may take a moment longer than the subscription: the client
	// pool re-dials on its own schedule. Both must be back within 5 s.
	for _, in := range []*instance{a, b} {
		for {
			code, body, _ := readyz(t, in)
			if code == http.StatusOK && body["redis"] == "ok" {
				t.Logf("%s: /readyz redis=ok again %v after Redis restarted", in.name, round(time.Since(restarted)))
				break
			}
			if time.Since(restarted) > 5*time.Second {
				t.Fatalf("%s: /readyz still %d %v 5s after Redis restarted", in.name, code, body)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	l.setPhase("back")
	// Writes work again, and are in force everywhere once they return.
	took, err = c.mgmt(a, disable(afterID))
	if err != nil {
		t.Fatalf("DisableKey after Redis came back: %v", err)
	}
	t.Logf("DisableKey after Redis came back: %v", round(took))
	f.wantValid(t, "right after DisableKey (Redis back)", afterSecret, false)
	if _, err := c.mgmt(b, enable(afterID)); err != nil {
		t.Fatalf("EnableKey after Redis came back: %v", err)
	}
	f.wantValid(t, "right after EnableKey (Redis back)", afterSecret, true)
	if _, err := c.mgmt(b, disable(probeID)); err != nil {
		t.Fatalf("DisableKey of the outage probe after Redis came back: %v", err)
	}
	f.wantValid(t, "right after DisableKey of the outage probe (Redis back)", probeSecret, false)
	time.Sleep(time.Second)
	l.halt()
	l.report(t)
	assertOnlyErrors(t, l, "down, first 1s", "active/Unavailable", "disabled/Unavailable", "unknown/Unavailable",
		"active/DeadlineExceeded", "disabled/DeadlineExceeded", "unknown/DeadlineExceeded")
	assertNoErrors(t, l, "before", "down", "restarting", "back")
}

// testRedisPaused: Redis is frozen (SIGSTOP) for 1.5 s: nothing answers,
// connections stay open, so every Redis call must time out (250 ms) and
// fall back to the store. No wrong answer, no Validate error.
func testRedisPaused(t *testing.T) {
	dsn := testenv.Postgres(t)
	r := startRedis(t)
	f := setupFaults(t, dsn, r)
	c, a, b := f.c, f.a, f.b
	probeID, probeSecret := f.probe(t, "pause-probe")
	before := c.getKey(t, a, probeID)

	l := startLoad(t, c, f.keys, 4, loadDeadline, "before")
	time.Sleep(time.Second)
	l.setPhase("paused")
	time.Sleep(10 * time.Millisecond)
	paused := time.Now()
	r.Pause(t)
	time.Sleep(300 * time.Millisecond) // past every lease
	took, err := c.mgmt(a, disable(probeID))
	wantCode(t, "DisableKey with Redis paused", took, err, codes.Unavailable)
	f.wantValid(t, "with Redis paused, the key whose write failed", probeSecret, true)
	sleepUntil(paused.Add(1500 * time.Millisecond))
	r.Resume(t)
	l.setPhase("resumed")
	time.Sleep(time.Second)

	if got := c.getKey(t, b, probeID); got.GetState() != keywardv1.Key_STATE_ACTIVE || got.GetEtag() != before.GetEtag() {
		t.Errorf("after a DisableKey failed with Redis paused: key is %v etag %q, want unchanged", got.GetState(), got.GetEtag())
	}
	f.wantValid(t, "after Redis resumed, the key whose write failed", probeSecret, true)
	// What the failed write left in Redis (its claim may have been executed
	// after it gave up): logged, for the record.
	t.Logf("the probe's Redis entry after the pause: %q", r.Do(t, "HGETALL", "{kw}:k:"+hexHash(probeSecret)))
	took, err = c.mgmt(b, disable(probeID))
	if err != nil {
		t.Fatalf("DisableKey after Redis resumed: %v", err)
	}
	t.Logf("DisableKey after Redis resumed: %v", round(took))
	f.wantValid(t, "right after DisableKey (Redis resumed)", probeSecret, false)
	time.Sleep(500 * time.Millisecond)
	l.halt()
	l.report(t)
	assertNoErrors(t, l, "before", "paused", "resumed")
}

// testPostgresCut puts a TCP proxy between keyward and Postgres and cuts it
// (open connections reset, new ones refused) for 3 s under load. Keys
// already cached keep validating; a key that is not cached fails closed with
// Unavailable; writes fail with Unavailable and leave nothing behind;
// /readyz says the store is unavailable. Restored, everything works again
// without restarting keyward.
func testPostgresCut(t *testing.T) {
	dsn := testenv.Postgres(t)
	proxy := testenv.NewProxy(t, postgresHostPort(t, dsn))
	r := startRedis(t)
	f := setupFaults(t, dsnVia(t, dsn, proxy.Addr()), r)
	c, a, b := f.c, f.a, f.b
	probeID, probeSecret := f.probe(t, "cut-probe")

	l := startLoad(t, c, f.keys, 4, loadDeadline, "before")
	time.Sleep(time.Second)
	l.setPhase("cut")
	time.Sleep(10 * time.Millisecond)
	cut := time.Now()
	proxy.Cut()

	unknown, err := keymat.Generate("live")
	if err != nil {
		t.Fatal(err)
	}
	for _, as := range c.validateAll(unknown.String()) {
		switch {
		case as.err == nil:
			t.Errorf("store cut: Validate of a key that is not cached on %s: valid=%v %v, want Unavailable",
				as.inst.name, as.resp.GetValid(), as.resp.GetReason())
		case status.Code(as.err) != codes.Unavailable:
			t.Errorf("store cut: Validate of a key that is not cached on %s: %v, want Unavailable", as.inst.name, as.err)
		default:
			t.Logf("store cut: Validate of an uncached key on %s: Unavailable after %v", as.inst.name, round(as.took))
		}
	}
	f.wantValid(t, "store cut, a cached key", probeSecret, true)
	cutName := "cut-create-" + randomName(t)
	took, err := c.mgmt(a, func(ctx context.Context, kc keywardv1.KeyServiceClient) error {
		_, err := kc.CreateKey(ctx, &keywardv1.CreateKeyRequest{Key: &keywardv1.Key{DisplayName: cutName}})
		return err
	})
	wantCode(t, "CreateKey with the store cut", took, err, codes.Unavailable)
	took, err = c.mgmt(b, disable(probeID))
	wantCode(t, "DisableKey with the store cut", took, err, codes.Unavailable)
	took, err = c.mgmt(a, func(ctx context.Context, kc keywardv1.KeyServiceClient) error {
		_, err := kc.GetKey(ctx, &keywardv1.GetKeyRequest{KeyId: probeID})
		return err
	})
	wantCode(t, "GetKey with the store cut", took, err, codes.Unavailable)
	code, body, rtook := readyz(t, b)
	t.Logf("/readyz with the store cut: %d %v in %v", code, body, round(rtook))
	if code != http.StatusServiceUnavailable || body["store"] != "unavailable" || body["redis"] != "ok" {
		t.Errorf("/readyz with the store cut: %d %v, want 503 store=unavailable redis=ok", code, body)
	}
	sleepUntil(cut.Add(3 * time.Second))

	l.setPhase("restored")
	if err := proxy.Restore(); err != nil {
		t.Fatal(err)
	}
	restored := time.Now()
	// The first write after the restore must work: pools reconnect by themselves.
	newID, newSecret := c.createKey(t, b, "after-cut")
	t.Logf("first CreateKey after the store came back: OK %v after the restore", round(time.Since(restored)))
	f.wantValid(t, "right after CreateKey (store back)", newSecret, true)
	for _, as := range c.validateAll(unknown.String()) {
		if as.err != nil || as.resp.GetValid() || as.resp.GetReason() != keywardv1.ValidateResponse_REASON_NOT_FOUND {
			t.Errorf("store back: Validate of a never-issued key on %s: %v, want REASON_NOT_FOUND", as.inst.name, as)
		}
	}
	if _, err := c.mgmt(a, disable(probeID)); err != nil {
		t.Fatalf("DisableKey after the store came back: %v", err)
	}
	f.wantValid(t, "right after DisableKey (store back)", probeSecret, false)
	if _, err := c.mgmt(b, disable(newID)); err != nil {
		t.Fatalf("DisableKey of the new key: %v", err)
	}
	f.wantValid(t, "right after DisableKey of the new key", newSecret, false)
	if n := c.countNamed(t, a, cutName); n != 0 {
		t.Errorf("a CreateKey that failed with the store cut left %d keys behind", n)
	}
	if code, body, _ := readyz(t, a); code != http.StatusOK {
		t.Errorf("/readyz after the store came back: %d %v, want 200", code, body)
	}
	time.Sleep(time.Second)
	l.halt()
	l.report(t)
	// Cached keys never need the store; never-issued ones do once their
	// negative entries lapse (5 s), and then fail closed.
	assertOnlyErrors(t, l, "cut", "unknown/Unavailable")
	assertNoErrors(t, l, "before", "restored")
}

// testPostgresStalled is the partition variant: the proxy stops forwarding
// (no resets, nothing answers) for 3 s. Cached keys keep validating without
// errors; an uncached key is never accepted; /readyz reports the store
// within its own timeout; once the proxy forwards again everything works.
func testPostgresStalled(t *testing.T) {
	dsn := testenv.Postgres(t)
	proxy := testenv.NewProxy(t, postgresHostPort(t, dsn))
	r := startRedis(t)
	f := setupFaults(t, dsnVia(t, dsn, proxy.Addr()), r)
	c, a, b := f.c, f.a, f.b
	probeID, probeSecret := f.probe(t, "stall-probe")

	l := startLoad(t, c, f.keys, 4, loadDeadline, "before")
	time.Sleep(time.Second)
	l.setPhase("stalled")
	time.Sleep(10 * time.Millisecond)
	stalled := time.Now()
	proxy.Stall()

	unknown, err := keymat.Generate("live")
	if err != nil {
		t.Fatal(err)
	}
	// A client with a 1 s deadline: the answer must not be valid=true.
	func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		t0 := time.Now()
		resp, err := a.kc.Validate(ctx, &keywardv1.ValidateRequest{Key: unknown.String()})
		switch {
		case err == nil:
			t.Errorf("store stalled: Validate of an uncached key: valid=%v %v after %v, want an error",
				resp.GetValid(), resp.GetReason(), round(time.Since(t0)))
		default:
			t.Logf("store stalled: Validate of an uncached key: %v after %v", status.Code(err), round(time.Since(t0)))
		}
	}()
	f.wantValid(t, "store stalled, a cached key", probeSecret, true)
	// Three probes at once: each checks the dependencies in its own order
	// (they are a map), and each must name only the store.
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, body, rtook := readyz(t, b)
			t.Logf("/readyz with the store stalled: %d %v in %v", code, body, round(rtook))
			if code != http.StatusServiceUnavailable || body["store"] != "unavailable" || body["redis"] != "ok" {
				t.Errorf("/readyz with the store stalled: %d %v, want 503 store=unavailable redis=ok", code, body)
			}
		}()
	}
	wg.Wait()
	sleepUntil(stalled.Add(3 * time.Second))

	l.setPhase("restored")
	if err := proxy.Restore(); err != nil {
		t.Fatal(err)
	}
	restored := time.Now()
	newID, newSecret := c.createKey(t, b, "after-stall")
	t.Logf("first CreateKey after the stall: OK %v after the restore", round(time.Since(restored)))
	f.wantValid(t, "right after CreateKey (store back)", newSecret, true)
	if _, err := c.mgmt(a, disable(probeID)); err != nil {
		t.Fatalf("DisableKey after the stall: %v", err)
	}
	f.wantValid(t, "right after DisableKey (store back)", probeSecret, false)
	if _, err := c.mgmt(a, disable(newID)); err != nil {
		t.Fatalf("DisableKey of the new key: %v", err)
	}
	f.wantValid(t, "right after DisableKey of the new key", newSecret, false)
	time.Sleep(time.Second)
	l.halt()
	l.report(t)
	assertOnlyErrors(t, l, "stalled", "unknown/Unavailable", "unknown/DeadlineExceeded")
	// Calls stuck in the stall finish after it, and count under "stalled";
	// calls started after the restore must all work.
	assertNoErrors(t, l, "before", "restored")
}

// testInstancePaused freezes one instance (SIGSTOP) while another writes.
// The write cannot get the frozen instance's acknowledgement, so it waits
// out that instance's lease (250 ms) — and no longer: it returns OK well
// within 400 ms. When the frozen instance wakes up, its very next Validate
// must already see the write. Each write is tried with a long pause (1 s)
// and with a pause that ends the moment the write returns, which is when a
// writer that did not wait long enough would be caught.
func testInstancePaused(t *testing.T) {
	dsn := testenv.Postgres(t)
	r := startRedis(t)
	f := setupFaults(t, dsn, r)
	c, a, b := f.c, f.a, f.b

	// Calls to the frozen instance wait for it: a deadline beyond the pause.
	l := startLoad(t, c, f.keys, 4, 3*time.Second, "running")
	type step struct {
		op    string
		pause time.Duration // 0: resume as soon as the write returns
	}
	var lat durations
	for _, s := range []step{
		{"DisableKey", time.Second}, {"EnableKey", time.Second}, {"RegenerateKey", time.Second},
		{"DisableKey", 0}, {"EnableKey", 0}, {"RegenerateKey", 0}, {"DeleteKey", 0},
	} {
		name := fmt.Sprintf("%s, pause %v", s.op, s.pause)
		id, secret := f.probe(t, "pause-"+s.op)
		want := false
		var call func(context.Context, keywardv1.KeyServiceClient) error
		newSecret := ""
		switch s.op {
		case "DisableKey":
			call = disable(id)
		case "EnableKey":
			if _, err := c.mgmt(a, disable(id)); err != nil {
				t.Fatal(err)
			}
			f.wantValid(t, name+": warming the disabled key", secret, false)
			f.wantValid(t, name+": warming the disabled key", secret, false)
			call, want = enable(id), true
		case "RegenerateKey":
			call = regenerate(id, &newSecret)
		case "DeleteKey":
			call = deleteKey(id)
		}

		b.Signal(t, syscall.SIGSTOP)
		paused := time.Now()
		time.Sleep(20 * time.Millisecond)
		took, err := c.mgmt(a, call)
		if s.pause == 0 {
			b.Signal(t, syscall.SIGCONT)
		} else {
			sleepUntil(paused.Add(s.pause))
			b.Signal(t, syscall.SIGCONT)
		}
		resumed := time.Now()
		resp, verr := b.validate(secret)
		first := time.Since(resumed)
		if err != nil {
			t.Fatalf("%s: the write on %s failed: %v", name, a.name, err)
		}
		lat.add(took)
		switch {
		case verr != nil:
			t.Errorf("%s: %s's first Validate after waking: %v", name, b.name, verr)
		case resp.GetValid() != want:
			t.Errorf("%s: %s's first Validate after waking: valid=%v (%v), want valid=%v",
				name, b.name, resp.GetValid(), resp.GetReason(), want)
		}
		if took > 400*time.Millisecond {
			t.Errorf("%s: the write took %v with one instance frozen, want ≤ 400ms (one lease and a margin)", name, round(took))
		}
		t.Logf("%s: %s on %s took %v with %s frozen; %s answered valid=%v %v after waking (in %v)",
			name, s.op, a.name, round(took), b.name, b.name, resp.GetValid(), resp.GetReason(), round(first))
		f.wantValid(t, name+": after waking", secret, want)
		if newSecret != "" {
			f.wantValid(t, name+": the new secret", newSecret, true)
		}
	}
	t.Logf("writes with one instance frozen: %s", lat.String())
	l.halt()
	l.report(t)
	// Calls to the frozen instance wait for it; none may fail.
	assertNoErrors(t, l, "running")
}

// postgresHostPort is the host:port the DSN points at.
func postgresHostPort(t *testing.T, dsn string) string {
	t.Helper()
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		t.Fatal("cannot parse the test DSN")
	}
	return net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
}

// hexHash is the hex SHA-256 of a secret, as the cache names its Redis entry.
func hexHash(secret string) string { return fmt.Sprintf("%x", keymat.Hash(secret)) }
