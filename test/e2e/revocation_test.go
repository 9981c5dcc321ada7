package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/status"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/testenv"
)

// TestRevocationAcrossInstances checks the revocation contract with every
// cache on: three keyward processes over one Postgres database and one
// Redis, each holding the key in its in-process tier; a revocation through
// one of them, once its RPC has returned, is in force on all of them — and so
// is a re-enable. Thousands of trials, zero violations.
//
// Besides the Validate calls each trial makes right after a write, one
// goroutine per instance validates the trial's key in a loop from just
// before the write until the trial ends, so lookups and fills of the old
// state race every invalidation and commit; an answer from a call that
// started after the write returned is judged the same way.
func TestRevocationAcrossInstances(t *testing.T) {
	trials, poolSize := 2000, 200
	if testing.Short() {
		trials, poolSize = 200, 50
	}
	dsn := testenv.Postgres(t)
	r := startRedis(t)
	c := startCluster(t, 3, dsn, r)
	revocationTrials(t, c, dsn, trials, poolSize, "Redis "+r.Addr)
}

// TestRevocationAcrossInstancesOnRedisCluster is the same with the three
// instances on a three-node Redis Cluster (--redis-addr lists the nodes):
// cache entries, scripts, the sharded invalidation channel and the
// acknowledgements go through go-redis's cluster client. Fewer trials: the
// protocol is the same, the cluster client's routing is what is new.
func TestRevocationAcrossInstancesOnRedisCluster(t *testing.T) {
	trials, poolSize := 300, 60
	if testing.Short() {
		trials, poolSize = 60, 20
	}
	dsn := testenv.Postgres(t)
	rc := testenv.StartRedisCluster(t)
	c := startClusterOnRedisCluster(t, 3, dsn, rc)
	revocationTrials(t, c, dsn, trials, poolSize, "Redis Cluster "+strings.Join(rc.Addrs, ","))
}

// revocationTrials runs the trials on c's three instances; redis describes
// their Redis for the log.
func revocationTrials(t *testing.T, c *cluster, dsn string, trials, poolSize int, redis string) {
	t.Run("in-process tier is in use", func(t *testing.T) { checkLocalTierServes(t, c, dsn) })
	if t.Failed() {
		t.FailNow()
	}

	type poolKey struct{ id, secret string }
	pool := make([]poolKey, poolSize)
	for i := range pool {
		id, secret := c.createKey(t, c.insts[i%3], fmt.Sprintf("pool-%d", i))
		pool[i] = poolKey{id, secret}
	}

	base := time.Now()
	clock := func() int64 { return int64(time.Since(base)) }
	var cur atomic.Pointer[trialState]
	var hammers hammerStats
	stopHammers := make(chan struct{})
	var hwg sync.WaitGroup
	for _, in := range c.insts {
		hwg.Add(1)
		go func() {
			defer hwg.Done()
			hammer(in, &cur, clock, stopHammers, &hammers)
		}()
	}
	haltHammers := sync.OnceFunc(func() { close(stopHammers); hwg.Wait() })
	defer haltHammers()

	var (
		writeLat   = map[string]*durations{"DisableKey": {}, "RegenerateKey": {}, "DeleteKey": {}, "EnableKey": {}, "CreateKey": {}}
		afterLat   durations // Validate calls right after a write
		warmLat    durations // Validate calls of a warm key (in-process hits)
		revokes    = map[string]int{}
		samples    []string // descriptions of violations, the first few
		nStale     int      // a Validate accepted a revoked secret
		nUnseen    int      // a Validate refused a key a write had just made valid
		nReason    int      // refused, for another reason than the write's
		nErrors    int      // a Validate or write failed
		errorsSeen []string
	)
	fail := func(kind *int, format string, args ...any) {
		*kind++
		if len(samples) < 10 {
			samples = append(samples, fmt.Sprintf(format, args...))
		}
	}
	rpcFailed := func(format string, args ...any) {
		nErrors++
		if len(errorsSeen) < 10 {
			errorsSeen = append(errorsSeen, fmt.Sprintf(format, args...))
		}
	}
	// checkValid asserts every answer of a validateAll that followed a write
	// making secret valid.
	checkValid := func(trial int, what string, as []answer) {
		for _, a := range as {
			afterLat.add(a.took)
			switch {
			case a.err != nil:
				rpcFailed("trial %d: Validate on %s after %s: %v", trial, a.inst.name, what, a.err)
			case !a.resp.GetValid():
				fail(&nUnseen, "trial %d: %s refused the key (%v) %v after %s returned",
					trial, a.inst.name, a.resp.GetReason(), a.offset, what)
			}
		}
	}

	ops := []string{"DisableKey", "RegenerateKey", "DeleteKey"}
	start := time.Now()
	for trial := range trials {
		pk := &pool[trial%len(pool)]
		// Warm: every instance answers twice, so the key is in every
		// in-process tier.
		for _, in := range c.insts {
			for range 2 {
				t0 := time.Now()
				resp, err := in.validate(pk.secret)
				warmLat.add(time.Since(t0))
				switch {
				case err != nil:
					rpcFailed("trial %d: warming on %s: %v", trial, in.name, err)
				case !resp.GetValid():
					fail(&nUnseen, "trial %d: warming on %s: refused (%v)", trial, in.name, resp.GetReason())
				}
			}
		}

		w := c.insts[trial%3]
		op := ops[(trial/3)%3]
		other := c.insts[(trial+1)%3]
		want := keywardv1.ValidateResponse_REASON_NOT_FOUND
		var call func(context.Context, keywardv1.KeyServiceClient) error
		newSecret := ""
		switch op {
		case "DisableKey":
			call, want = disable(pk.id), keywardv1.ValidateResponse_REASON_DISABLED
		case "RegenerateKey":
			call = regenerate(pk.id, &newSecret)
		case "DeleteKey":
			call = deleteKey(pk.id)
		}
		st := &trialState{secret: pk.secret, disable: op == "DisableKey"}
		cur.Store(st)
		took, err := c.mgmt(w, call)
		st.revoked.Store(clock())
		writeLat[op].add(took)
		if err != nil {
			rpcFailed("trial %d: %s on %s: %v", trial, op, w.name, err)
			t.Fatalf("trial %d: %s on %s failed: %v", trial, op, w.name, err)
		}
		revokes[op]++
		for _, a := range c.validateAll(pk.secret) {
			afterLat.add(a.took)
			switch {
			case a.err != nil:
				rpcFailed("trial %d: Validate on %s after %s on %s: %v", trial, a.inst.name, op, w.name, a.err)
			case a.resp.GetValid():
				fail(&nStale, "trial %d: %s accepted the old secret %v after %s on %s returned",
					trial, a.inst.name, a.offset, op, w.name)
			case a.resp.GetReason() != want:
				fail(&nReason, "trial %d: %s refused the old secret for %v, want %v, after %s on %s",
					trial, a.inst.name, a.resp.GetReason(), want, op, w.name)
			}
		}

		// Make the pool key usable again, through another instance, and
		// check the change is in effect everywhere at once.
		switch op {
		case "DisableKey":
			st.restoring.Store(clock())
			took, err := c.mgmt(other, enable(pk.id))
			st.restored.Store(clock())
			writeLat["EnableKey"].add(took)
			if err != nil {
				t.Fatalf("trial %d: EnableKey on %s: %v", trial, other.name, err)
			}
			checkValid(trial, "EnableKey on "+other.name, c.validateAll(pk.secret))
		case "RegenerateKey":
			pk.secret = newSecret
			checkValid(trial, "RegenerateKey on "+w.name+" (new secret)", c.validateAll(pk.secret))
		case "DeleteKey":
			t0 := time.Now()
			pk.id, pk.secret = c.createKey(t, other, fmt.Sprintf("pool-%d-%d", trial%len(pool), trial))
			writeLat["CreateKey"].add(time.Since(t0))
			checkValid(trial, "CreateKey on "+other.name, c.validateAll(pk.secret))
		}
		st.closed.Store(clock())
		cur.Store(nil) // the hammers rest while the next key is warmed
	}
	elapsed := time.Since(start)
	haltHammers()

	t.Logf("%d trials in %v over 3 instances (%d disable, %d regenerate, %d delete); in-process cache on, %s",
		trials, elapsed.Round(time.Millisecond), revokes["DisableKey"], revokes["RegenerateKey"], revokes["DeleteKey"], redis)
	for _, op := range []string{"DisableKey", "RegenerateKey", "DeleteKey", "EnableKey", "CreateKey"} {
		t.Logf("  %-13s %s", op, writeLat[op].String())
	}
	t.Logf("  Validate, warm (in-process): %s", warmLat.String())
	t.Logf("  Validate, right after a write: %s", afterLat.String())
	t.Logf("  violations: accepted a revoked secret %d, refused a just-enabled/new key %d, wrong reason %d; RPC errors %d",
		nStale, nUnseen, nReason, nErrors)
	h := hammers.snapshot()
	t.Logf("  concurrent hammer: %d Validate calls, %d judged after a revoke, %d judged after a re-enable, %d violations, %d errors",
		h.calls, h.judgedRevoked, h.judgedEnabled, h.violations, h.errors)
	t.Logf("  DisableKey p50=%v p99=%v (three healthy instances)",
		round(writeLat["DisableKey"].pct(50)), round(writeLat["DisableKey"].pct(99)))

	if nStale+nUnseen+nReason > 0 {
		t.Errorf("%d violations of the revocation contract; first: %s", nStale+nUnseen+nReason, strings.Join(samples, "; "))
	}
	if nErrors > 0 {
		t.Errorf("%d RPC errors with every dependency up; first: %s", nErrors, strings.Join(errorsSeen, "; "))
	}
	if h.violations > 0 {
		t.Errorf("concurrent Validate: %d violations; first: %s", h.violations, strings.Join(h.samples, "; "))
	}
	if h.errors > 0 {
		t.Errorf("concurrent Validate: %d errors with every dependency up; first: %s", h.errors, strings.Join(h.errorSamples, "; "))
	}
	if h.judgedRevoked == 0 {
		t.Errorf("the concurrent Validate loop never ran after a revocation: it checked nothing")
	}
}

// trialState is the key a trial revokes, with the times (test clock, ns)
// that decide what a Validate starting at a given moment must answer.
type trialState struct {
	secret    string
	disable   bool         // revoked by DisableKey and made valid again by EnableKey
	revoked   atomic.Int64 // the revoking RPC returned
	restoring atomic.Int64 // EnableKey was sent
	restored  atomic.Int64 // EnableKey returned
	closed    atomic.Int64 // the trial ended; later writes may touch the key
}

type hammerStats struct {
	mu                           sync.Mutex
	calls, errors, violations    int
	judgedRevoked, judgedEnabled int
	samples, errorSamples        []string
}

func (h *hammerStats) snapshot() hammerStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return hammerStats{calls: h.calls, errors: h.errors, violations: h.violations,
		judgedRevoked: h.judgedRevoked, judgedEnabled: h.judgedEnabled,
		samples: h.samples, errorSamples: h.errorSamples}
}

// hammer validates the current trial's secret on in until stop, judging each
// answer by when its call started and ended:
//   - started after the revoking write returned, and ended before the
//     re-enable was sent (or there is none): must be refused;
//   - started after the re-enable returned, and ended before the trial
//     closed: must be accepted.
//
// Anything overlapping a write may answer either way.
func hammer(in *instance, cur *atomic.Pointer[trialState], clock func() int64, stop chan struct{}, h *hammerStats) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		st := cur.Load()
		if st == nil {
			time.Sleep(100 * time.Microsecond)
			continue
		}
		start := clock()
		resp, err := in.validate(st.secret)
		end := clock()
		revoked, restoring, restored, closed := st.revoked.Load(), st.restoring.Load(), st.restored.Load(), st.closed.Load()

		h.mu.Lock()
		h.calls++
		switch {
		case err != nil:
			h.errors++
			if len(h.errorSamples) < 10 {
				h.errorSamples = append(h.errorSamples, fmt.Sprintf("%s: %v", in.name, status.Code(err)))
			}
		case revoked != 0 && start > revoked && (restoring == 0 || end < restoring):
			h.judgedRevoked++
			if resp.GetValid() {
				h.violations++
				if len(h.samples) < 10 {
					h.samples = append(h.samples, fmt.Sprintf("%s accepted a secret %v after its revocation returned",
						in.name, time.Duration(start-revoked)))
				}
			}
		case st.disable && restored != 0 && start > restored && (closed == 0 || end < closed):
			h.judgedEnabled++
			if !resp.GetValid() {
				h.violations++
				if len(h.samples) < 10 {
					h.samples = append(h.samples, fmt.Sprintf("%s refused (%v) a key %v after EnableKey returned",
						in.name, resp.GetReason(), time.Duration(start-restored)))
				}
			}
		}
		h.mu.Unlock()
	}
}

// checkLocalTierServes makes sure the test exercises the in-process tier:
// it warms a key on every instance, then disables it in the database behind
// keyward's back and empties Redis. An instance that still accepts the key
// answered from its in-process copy. (The copy is stale on purpose; the key
// is then disabled and enabled through the API, which corrects every tier.)
func checkLocalTierServes(t *testing.T, c *cluster, dsn string) {
	var lastMiss []string
	for attempt := range 3 {
		id, secret := c.createKey(t, c.insts[attempt%3], "tier-probe-"+randomName(t))
		for _, in := range c.insts {
			for range 2 {
				if resp, err := in.validate(secret); err != nil || !resp.GetValid() {
					t.Fatalf("warming the probe key on %s: %v %v", in.name, resp, err)
				}
			}
		}
		rawDB(t, dsn, func(ctx context.Context, conn *pgx.Conn) {
			if _, err := conn.Exec(ctx, "UPDATE api_keys SET state = 2 WHERE id = $1", id); err != nil {
				t.Fatalf("disable the probe key in the database: %v", err)
			}
		})
		c.flushRedis(t)
		lastMiss = nil
		for _, a := range c.validateAll(secret) {
			if a.err != nil || !a.resp.GetValid() {
				lastMiss = append(lastMiss, a.String())
			}
		}
		rawDB(t, dsn, func(ctx context.Context, conn *pgx.Conn) {
			if _, err := conn.Exec(ctx, "UPDATE api_keys SET state = 1 WHERE id = $1", id); err != nil {
				t.Fatalf("re-enable the probe key in the database: %v", err)
			}
		})
		for _, call := range []func(context.Context, keywardv1.KeyServiceClient) error{disable(id), enable(id)} {
			if _, err := c.mgmt(c.insts[0], call); err != nil {
				t.Fatalf("resetting the probe key: %v", err)
			}
		}
		for _, a := range c.validateAll(secret) {
			if a.err != nil || !a.resp.GetValid() {
				t.Fatalf("after resetting the probe key through the API: %v", a)
			}
		}
		if lastMiss == nil {
			t.Logf("every instance answered a warm key from its in-process tier (attempt %d)", attempt+1)
			return
		}
	}
	t.Fatalf("a warm key was not served from the in-process tier (its row was disabled and Redis emptied, and these "+
		"answered from the store): %v. The revocation test would not exercise the in-process tier.", lastMiss)
}
