package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/cache"
	"github.com/keyward/keyward/internal/keymat"
	"github.com/keyward/keyward/internal/testenv"
)

// TestFaultMatrix runs validation and management load through each fault of
// issue 9 in turn — Redis stopped, Redis restarted empty, Redis slow,
// Postgres unreachable, Postgres slow, the invalidation channel cut while
// both stores stay up, one instance paused — plus a few variants, and
// asserts for each:
//   - zero wrong answers: every Validate and Envoy Check is judged by the
//     history checker (history.judge) against the writes that returned
//     before it started: never valid=true for a revoked, deleted, expired or
//     never-issued key, never a refusal of a key that must be valid;
//   - management calls succeed, or fail with Unavailable or
//     DeadlineExceeded and write nothing: after the run, the store (read
//     directly, not through keyward) holds the key at the version it had
//     before the call, and the audit trail has no event for it;
//   - full recovery without restarts: after the fault ends, every instance
//     reports ready, trusts its in-process tier again and takes a write, and
//     from then on nothing fails.
//
// Each fault gets two fresh `keyward serve` processes on a fresh database
// and a private redis-server, each instance reaching Postgres through one
// TCP proxy and Redis through a proxy of its own, which the test controls.
// It prints a table per fault (requests, error rate, p50/p99 latency, wrong
// answers per phase; management calls; recovery time) and a summary. The
// fault lasts 3 s (-short 2 s); KEYWARD_FULL=1 (make reliability) makes it
// 20 s.
func TestFaultMatrix(t *testing.T) {
	size := matrixSizeFor(testing.Short())
	var summary []string
	for _, f := range faultMatrix() {
		t.Run(strings.ReplaceAll(f.name, " ", "-"), func(t *testing.T) {
			summary = append(summary, runFault(t, f, size))
		})
	}
	t.Logf("fault matrix, fault %v each (before %v, after %v), 2 instances, in-process cache on:\n%-54s %8s %7s %9s %9s %5s %18s %9s\n%s",
		size.fault, size.before, size.after,
		"fault", "requests", "errors", "p50", "p99", "wrong", "writes ok/failed", "recovery", strings.Join(summary, "\n"))
}

// matrixSize is how long each part of a fault's run lasts.
type matrixSize struct {
	before, fault, after time.Duration
	recoveryMax          time.Duration
}

func matrixSizeFor(short bool) matrixSize {
	switch {
	case fullSize():
		return matrixSize{before: 3 * time.Second, fault: 20 * time.Second, after: 5 * time.Second, recoveryMax: 20 * time.Second}
	case short:
		return matrixSize{before: time.Second, fault: 2 * time.Second, after: time.Second, recoveryMax: 15 * time.Second}
	}
	return matrixSize{before: time.Second, fault: 3 * time.Second, after: time.Second, recoveryMax: 15 * time.Second}
}

// matrixFault is one row of the matrix.
type matrixFault struct {
	name   string
	inject func(t *testing.T, r *faultRig)
	heal   func(t *testing.T, r *faultRig) // nil: the fault ends by itself
	// errorOK says whether a Validate or Check error (Unavailable or
	// DeadlineExceeded; Check's 503) is acceptable for a call that started in
	// phase, on instance inst, for secret s. Errors are counted either way.
	errorOK func(phase string, inst int, s *hsecret) bool
	// writesOK says whether management calls through inst must succeed
	// during the fault; otherwise they may fail with Unavailable or
	// DeadlineExceeded (and must then write nothing).
	writesOK func(inst int) bool
}

// Phases of a run, by when a call started.
const (
	phBefore     = "before"
	phFaultFirst = "fault, first 1s"
	phFault      = "fault"
	phRecovery   = "recovery"
	phAfter      = "after"
)

func errorsNever(string, int, *hsecret) bool { return false }
func writesEverywhere(int) bool              { return true }
func writesNowhere(int) bool                 { return false }

// inFirstSecond allows errors while the instances notice the fault.
func inFirstSecond(phase string, _ int, _ *hsecret) bool { return phase == phFaultFirst }

// notCached allows errors, while the store is away or slow, for the
// secrets that must be looked up in it, and then fail closed or take longer
// than the load's deadline: those not warmed in every tier before the run
// (the churn's), those whose answer is "not found" (a negative cache entry
// lasts 5 s), and those of a key with a failed write (its outcome unknown,
// the write leaves the key marked pending, and readers go to the store,
// until the marker lapses).
func notCached(phase string, _ int, s *hsecret) bool {
	if phase != phFaultFirst && phase != phFault && phase != phRecovery {
		return false
	}
	if !s.warm {
		return true
	}
	for _, w := range s.writes {
		if !w.ok {
			return true
		}
	}
	last := s.writes[len(s.writes)-1].op
	return last == histNeverIssued || last == histDelete || last == histRegenerate
}

func faultMatrix() []matrixFault {
	redisLatency := func(d time.Duration) (func(*testing.T, *faultRig), func(*testing.T, *faultRig)) {
		set := func(d time.Duration) func(*testing.T, *faultRig) {
			return func(_ *testing.T, r *faultRig) {
				for _, p := range r.redisProxies {
					p.SetLatency(d)
				}
			}
		}
		return set(d), set(0)
	}
	slowInject, slowHeal := redisLatency(40 * time.Millisecond)
	slowerInject, slowerHeal := redisLatency(300 * time.Millisecond)
	return []matrixFault{{
		name:     "redis stopped",
		inject:   func(t *testing.T, r *faultRig) { r.redis.Kill(t) },
		heal:     func(t *testing.T, r *faultRig) { r.redis.Restart(t) },
		errorOK:  inFirstSecond,
		writesOK: writesNowhere,
	}, {
		name: "redis restarted empty",
		inject: func(t *testing.T, r *faultRig) {
			r.redis.Kill(t)
			r.redis.Restart(t)
		},
		errorOK:  inFirstSecond,
		writesOK: writesNowhere,
	}, {
		name:     "redis slow (+40ms each way)",
		inject:   slowInject,
		heal:     slowHeal,
		errorOK:  errorsNever,
		writesOK: writesEverywhere,
	}, {
		name:     "redis slower than its timeout (+300ms)",
		inject:   slowerInject,
		heal:     slowerHeal,
		errorOK:  errorsNever,
		writesOK: writesNowhere,
	}, {
		name:     "postgres unreachable (reset)",
		inject:   func(_ *testing.T, r *faultRig) { r.pg.Cut() },
		heal:     func(t *testing.T, r *faultRig) { restoreProxy(t, r.pg) },
		errorOK:  notCached,
		writesOK: writesNowhere,
	}, {
		name:     "postgres unreachable (partition)",
		inject:   func(_ *testing.T, r *faultRig) { r.pg.Stall() },
		heal:     func(t *testing.T, r *faultRig) { restoreProxy(t, r.pg) },
		errorOK:  notCached,
		writesOK: writesNowhere,
	}, {
		name:   "postgres slow (+50ms each way)",
		inject: func(_ *testing.T, r *faultRig) { r.pg.SetLatency(50 * time.Millisecond) },
		heal:   func(_ *testing.T, r *faultRig) { r.pg.SetLatency(0) },
		// Warm keys answer from memory; a lookup that needs the store waits
		// for a pooled connection behind writes holding theirs for many
		// round trips, and may miss the load's 1 s deadline.
		errorOK:  notCached,
		writesOK: writesEverywhere,
	}, {
		// Only keyward-1's pub/sub connection is held (its proxy forwards
		// nothing on it, and keeps it open): its commands to Redis and
		// everything of keyward-0 work. It hears no invalidation, and gets
		// no pong, so its lease lapses; writers wait that lease out.
		name:     "invalidation channel partitioned (keyward-1)",
		inject:   func(_ *testing.T, r *faultRig) { r.redisProxies[1].StallTagged() },
		heal:     func(t *testing.T, r *faultRig) { restoreProxy(t, r.redisProxies[1]) },
		errorOK:  errorsNever,
		writesOK: writesEverywhere,
	}, {
		// Redis closes every pub/sub connection, every 100 ms.
		name: "invalidation channel killed (CLIENT KILL TYPE pubsub)",
		inject: func(t *testing.T, r *faultRig) {
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				tick := time.NewTicker(100 * time.Millisecond)
				defer tick.Stop()
				for {
					r.redis.do("CLIENT", "KILL", "TYPE", "pubsub")
					select {
					case <-stop:
						return
					case <-tick.C:
					}
				}
			}()
			r.stopInjector = func() { close(stop); <-done }
		},
		heal:     func(_ *testing.T, r *faultRig) { r.stopInjector() },
		errorOK:  errorsNever,
		writesOK: writesEverywhere,
	}, {
		name:   "instance paused (SIGSTOP keyward-1)",
		inject: func(t *testing.T, r *faultRig) { r.c.insts[1].Signal(t, syscall.SIGSTOP) },
		heal:   func(t *testing.T, r *faultRig) { r.c.insts[1].Signal(t, syscall.SIGCONT) },
		// Calls to the frozen instance time out; nothing else may fail.
		errorOK: func(phase string, inst int, _ *hsecret) bool {
			return inst == 1 && phase != phBefore && phase != phAfter
		},
		writesOK: func(inst int) bool { return inst != 1 },
	}}
}

// setupRetry runs a write the run's setup needs, again while it fails with
// Unavailable (a busy machine can make a Redis call miss its 250 ms): the
// setup is not what is under test. A DeleteKey repeated after an Unavailable
// that had in fact been committed finds no key: that counts as done.
func setupRetry(f func() error) error {
	var err error
	for try := range 5 {
		err = f()
		switch code := status.Code(err); {
		case code == codes.Unavailable:
			time.Sleep(200 * time.Millisecond)
			continue
		case code == codes.NotFound && try > 0:
			return nil
		}
		return err
	}
	return err
}

func restoreProxy(t *testing.T, p *testenv.Proxy) {
	t.Helper()
	if err := p.Restore(); err != nil {
		t.Fatal(err)
	}
}

// faultRig is what one row runs on.
type faultRig struct {
	dsn          string // direct, for checks behind keyward's back
	redis        *redisProc
	pg           *testenv.Proxy   // between the instances and Postgres
	redisProxies []*testenv.Proxy // between each instance and Redis
	c            *cluster
	stopInjector func()
}

// startClusterVia starts one instance per Redis address, like startCluster.
func startClusterVia(t *testing.T, dsn string, redisAddrs []string) *cluster {
	t.Helper()
	dsns := make([]string, len(redisAddrs))
	for i := range dsns {
		dsns[i] = dsn
	}
	return startClusterEach(t, dsns, redisAddrs)
}

// newInstance wraps s with a gRPC client, closed when t ends.
func newInstance(t *testing.T, s *server, i int) *instance {
	t.Helper()
	conn, err := grpc.NewClient(s.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &instance{server: s, name: fmt.Sprintf("keyward-%d", i), kc: keywardv1.NewKeyServiceClient(conn)}
}

// mgmtDeadline is the management load's deadline per call.
const mgmtDeadline = 5 * time.Second

// mgmtRecord is one management call of the churn.
type mgmtRecord struct {
	op         string
	inst       int
	start, end int64 // history clock
	code       codes.Code
	// For a failed call: what the store held before it, to check that it
	// wrote nothing.
	keyID, name     string
	version, audits int64
	validBefore     bool
	secret          *hsecret
	// The client's deadline ran out: the server may have been working on
	// the call (or may get to it later), so its outcome is unknown to the
	// client; it must then be all or nothing.
	clientTimedOut bool
}

// validAfter is whether the key's secret (the one before the call) is valid
// once the call has taken effect.
func (r *mgmtRecord) validAfter() bool {
	switch r.op {
	case "EnableKey":
		return true
	case "UpdateKey":
		return r.validBefore
	}
	return false
}

// runFault runs one row and returns its summary line.
func runFault(t *testing.T, f matrixFault, size matrixSize) string {
	dsn := testenv.Postgres(t)
	r := &faultRig{dsn: dsn, redis: startRedis(t)}
	r.pg = testenv.NewProxy(t, postgresHostPort(t, dsn))
	var addrs []string
	for range 2 {
		p := testenv.NewProxy(t, r.redis.Addr)
		p.Tag("subscribe") // SSUBSCRIBE: the instance's invalidation stream
		r.redisProxies = append(r.redisProxies, p)
		addrs = append(addrs, p.Addr())
	}
	r.c = startClusterVia(t, dsnVia(t, dsn, r.pg.Addr()), addrs)
	c := r.c
	for i, p := range r.redisProxies {
		if n := p.Tagged(); n != 1 {
			t.Fatalf("%s has %d pub/sub connections through its Redis proxy, want 1", c.insts[i].name, n)
		}
	}
	names := []string{c.insts[0].name, c.insts[1].name}
	h := newHistory()
	tgs := histTargets(t, c)

	// The load's fixed keys, each with the answer it must get.
	var fixed []*hsecret
	create := func(name string, ttl time.Duration) (*hsecret, *keywardv1.Key) {
		in := c.insts[len(fixed)%2]
		var resp *keywardv1.CreateKeyResponse
		sent, returned, err := h.write(in.name, func() error {
			ctx, cancel := rpcCtx()
			defer cancel()
			k := &keywardv1.Key{DisplayName: name + "-" + randomName(t)}
			if ttl > 0 {
				k.Ttl = durationpb.New(ttl)
			}
			return setupRetry(func() error {
				var err error
				resp, err = in.kc.CreateKey(c.admin(ctx), &keywardv1.CreateKeyRequest{Key: k})
				return err
			})
		}, nil)
		if err != nil {
			t.Fatalf("CreateKey: %v", err)
		}
		return h.secret(resp.GetKey().GetKeyId(), resp.GetSecret(), sent, returned, in.name), resp.GetKey()
	}
	var expiring []*hsecret
	var expireAt []time.Time
	for range 2 {
		s, k := create("expiring", 2*time.Second)
		expiring, expireAt = append(expiring, s), append(expireAt, k.GetExpireTime().AsTime())
	}
	for range 4 {
		s, _ := create("active", 0)
		fixed = append(fixed, s)
	}
	for _, op := range []histOp{histDisable, histDisable, histDelete, histDelete, histRegenerate, histRegenerate} {
		s, _ := create("revoked", 0)
		var call func(context.Context, keywardv1.KeyServiceClient) error
		var newSecret string
		switch op {
		case histDisable:
			call = disable(s.keyID)
		case histDelete:
			call = deleteKey(s.keyID)
		case histRegenerate:
			call = regenerate(s.keyID, &newSecret)
		}
		if _, _, err := h.write(c.insts[0].name, func() error {
			return setupRetry(func() error { _, err := c.mgmt(c.insts[0], call); return err })
		}, map[*hsecret]histOp{s: op}); err != nil {
			t.Fatalf("%s: %v", op, err)
		}
		fixed = append(fixed, s)
	}
	for range 2 {
		u, err := keymat.Generate("live")
		if err != nil {
			t.Fatal(err)
		}
		fixed = append(fixed, h.neverIssued(u.String()))
	}
	for i, s := range expiring {
		time.Sleep(time.Until(expireAt[i].Add(100 * time.Millisecond)))
		s.expired(h.now())
		fixed = append(fixed, s)
	}
	for _, s := range fixed {
		s.warm = true // in every tier of every instance, below
	}
	warm := h.recorder()
	for _, s := range fixed {
		for _, tg := range tgs {
			for _, m := range []histMethod{viaValidate, viaCheck} {
				if out, _ := warm.call(tg, m, s, rpcTimeout); out == failed {
					t.Fatalf("warming the load's keys: %s on %s failed", m, tg.name)
				}
			}
		}
	}
	probeID, _ := c.createKey(t, c.insts[0], "recovery-probe")

	// The management load: two goroutines, each making about 10 calls a
	// second on keys of its own (so one call blocked by the fault does not
	// stop the load), held in slots; clients validate the slots' current and
	// previous secrets. A failed call retires its key (it must stay as it
	// was), so each goroutine starts with enough keys for every call of the
	// fault to change one; only its goroutine adds slots.
	type churnSlots struct {
		slots []hslot
		n     atomic.Int32
	}
	pool := 20 + int(size.fault/(100*time.Millisecond))
	churns := make([]*churnSlots, 2)
	for g := range churns {
		cs := &churnSlots{slots: make([]hslot, 2*pool+int((size.before+size.fault+size.after+size.recoveryMax)/(100*time.Millisecond)))}
		for i := range pool {
			s, _ := create(fmt.Sprintf("churn-pool-%d-%d", g, i), 0)
			cs.slots[i].cur.Store(s)
			cs.n.Add(1)
		}
		churns[g] = cs
	}

	phases := []*phaseFig{{name: phBefore}, {name: phFaultFirst}, {name: phFault}, {name: phRecovery}, {name: phAfter}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, tg := range tgs {
		for _, m := range []histMethod{viaValidate, viaCheck} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rec := h.recorder()
				rng := rand.New(rand.NewPCG(uint64(tg.idx)<<4|uint64(m), uint64(time.Now().UnixNano())))
				for {
					select {
					case <-stop:
						return
					default:
					}
					var s *hsecret
					cs := churns[rng.IntN(len(churns))]
					if n := int(cs.n.Load()); n > 0 && rng.IntN(3) == 0 {
						sl := &cs.slots[rng.IntN(n)]
						s = sl.cur.Load()
						if p := sl.prev.Load(); p != nil && rng.IntN(2) == 0 {
							s = p
						}
					} else {
						s = fixed[rng.IntN(len(fixed))]
					}
					rec.call(tg, m, s, loadDeadline)
				}
			}()
		}
	}
	var (
		mu      sync.Mutex
		records []*mgmtRecord
	)
	for g, cs := range churns {
		slots, nslots := cs.slots, &cs.n
		direct := directConn(t, dsn)
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), uint64(time.Now().UnixNano())))
			disabled := map[*hslot]bool{}
			retired := map[*hslot]bool{}
			live := func() []*hslot {
				var out []*hslot
				for i := range int(nslots.Load()) {
					if !retired[&slots[i]] {
						out = append(out, &slots[i])
					}
				}
				return out
			}
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
				wi := rng.IntN(2)
				in := c.insts[wi]
				rec := &mgmtRecord{inst: wi}
				ls := live()
				var sl *hslot
				var call func(ctx context.Context) error
				ops := map[*hsecret]histOp{}
				if len(ls) == 0 || rng.IntN(8) == 0 {
					if int(nslots.Load()) == len(slots) {
						continue
					}
					rec.op, rec.name = "CreateKey", fmt.Sprintf("churn-%d-%d-%s", g, n, randomName(t))
					var resp *keywardv1.CreateKeyResponse
					call = func(ctx context.Context) error {
						var err error
						resp, err = in.kc.CreateKey(ctx, &keywardv1.CreateKeyRequest{Key: &keywardv1.Key{DisplayName: rec.name}})
						return err
					}
					sent := h.now()
					ctx, cancel := context.WithTimeout(c.admin(context.Background()), mgmtDeadline)
					err := call(ctx)
					rec.clientTimedOut = ctx.Err() != nil
					cancel()
					rec.start, rec.end, rec.code = sent, h.now(), status.Code(err)
					if err == nil {
						i := nslots.Load()
						slots[i].cur.Store(h.secret(resp.GetKey().GetKeyId(), resp.GetSecret(), rec.start, rec.end, in.name))
						nslots.Add(1)
					}
					mu.Lock()
					records = append(records, rec)
					mu.Unlock()
					continue
				}
				sl = ls[rng.IntN(len(ls))]
				cur := sl.cur.Load()
				rec.keyID, rec.secret, rec.validBefore = cur.keyID, cur, !disabled[sl]
				var newSecret string
				switch {
				case disabled[sl]:
					rec.op, ops[cur] = "EnableKey", histEnable
					call = func(ctx context.Context) error { return enable(cur.keyID)(ctx, in.kc) }
				default:
					switch rng.IntN(4) {
					case 0:
						rec.op, ops[cur] = "DisableKey", histDisable
						call = func(ctx context.Context) error { return disable(cur.keyID)(ctx, in.kc) }
					case 1:
						rec.op, ops[cur] = "RegenerateKey", histRegenerate
						call = func(ctx context.Context) error { return regenerate(cur.keyID, &newSecret)(ctx, in.kc) }
					case 2:
						rec.op, ops[cur] = "DeleteKey", histDelete
						call = func(ctx context.Context) error { return deleteKey(cur.keyID)(ctx, in.kc) }
					default:
						// Changes nothing about validity, but is a write.
						rec.op = "UpdateKey"
						call = func(ctx context.Context) error {
							_, err := in.kc.UpdateKey(ctx, &keywardv1.UpdateKeyRequest{
								Key:        &keywardv1.Key{KeyId: cur.keyID, Description: fmt.Sprintf("churn %d", n)},
								UpdateMask: fieldMask("description")})
							return err
						}
					}
				}
				rec.version, rec.audits = direct.state(t, cur.keyID)
				var err error
				rec.start, rec.end, err = h.write(in.name, func() error {
					ctx, cancel := context.WithTimeout(c.admin(context.Background()), mgmtDeadline)
					defer cancel()
					err := call(ctx)
					rec.clientTimedOut = ctx.Err() != nil
					return err
				}, ops)
				rec.code = status.Code(err)
				mu.Lock()
				records = append(records, rec)
				mu.Unlock()
				if err != nil {
					retired[sl] = true
					continue
				}
				switch rec.op {
				case "EnableKey":
					disabled[sl] = false
				case "DisableKey":
					disabled[sl] = true
				case "RegenerateKey":
					sl.prev.Store(cur)
					sl.cur.Store(h.secret(cur.keyID, newSecret, rec.start, rec.end, in.name))
				case "DeleteKey":
					retired[sl] = true
				}
			}
		}()
	}
	halt := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer halt()

	// The run: before, the fault, recovery, after.
	phases[0].from = h.now()
	time.Sleep(size.before)
	phases[1].from = h.now()
	faultAt := time.Now()
	f.inject(t, r)
	phases[2].from = phases[1].from + int64(time.Second)
	time.Sleep(time.Until(faultAt.Add(size.fault)))
	phases[3].from = h.now()
	if f.heal != nil {
		f.heal(t, r)
	}
	recovery, recErr := r.awaitRecovery(probeID, size.recoveryMax)
	phases[4].from = h.now()
	time.Sleep(size.after)
	halt()
	if recErr != nil {
		t.Errorf("no recovery within %v of the fault's end (without restarting anything): %v", size.recoveryMax, recErr)
	}

	// A failed management call must have written nothing — unless the
	// client gave up waiting (its deadline ran out): then the server may
	// still have been working on it, and it must have written all or nothing.
	var failedCalls, wrote, lateWhole, unconfirmedWhole int
	direct := directConn(t, dsn)
	// Writes that committed but could not be confirmed in the caches are
	// answered Unavailable, and logged: that many may have been written.
	// So may writes whose COMMIT broke off, which the instance logs as of
	// unknown outcome: a client cannot be told which way those went.
	unconfirmed := make([]int, len(c.insts))
	for i, in := range c.insts {
		unconfirmed[i] = in.MsgCount(cache.MsgUnconfirmed) + in.MsgCount(cache.MsgOutcomeUnknown)
	}
	// whole accounts for a failed call found carried out whole: allowed if
	// the client gave up waiting, or if the instance said it could not
	// confirm a committed write.
	whole := func(rec *mgmtRecord, how string) bool {
		switch {
		case rec.clientTimedOut:
			lateWhole++
			t.Logf("a %s of %s that %s was carried out all the same, whole", rec.op, rec.keyID, how)
		case rec.code == codes.Unavailable && unconfirmed[rec.inst] > 0:
			unconfirmed[rec.inst]--
			unconfirmedWhole++
			t.Logf("a %s of %s that %s was committed, whole, and answered Unavailable as of unknown outcome or not confirmed in the caches",
				rec.op, rec.keyID, how)
		default:
			return false
		}
		return true
	}
	for _, rec := range records {
		if rec.code == codes.OK {
			continue
		}
		failedCalls++
		if rec.code != codes.Unavailable && rec.code != codes.DeadlineExceeded {
			t.Errorf("%s through %s failed with %v; want Unavailable or DeadlineExceeded", rec.op, names[rec.inst], rec.code)
		}
		how := fmt.Sprintf("failed with %v through %s after %v (%s phase)", rec.code, names[rec.inst],
			round(time.Duration(rec.end-rec.start)), phaseName(phases, rec.start))
		if rec.clientTimedOut {
			how += ", the client's deadline having run out"
		}
		if rec.op == "CreateKey" {
			switch n := direct.countNamed(t, rec.name); {
			case n == 0:
			case n == 1 && whole(rec, how):
			default:
				wrote++
				t.Errorf("a CreateKey that %s left %d keys behind", how, n)
			}
			continue
		}
		v, a := direct.state(t, rec.keyID)
		valid := rec.validBefore
		switch {
		case v == rec.version && a == rec.audits:
		case a == rec.audits+1 && (rec.op == "DeleteKey" && v == -1 || rec.op != "DeleteKey" && v == rec.version+1) && whole(rec, how):
			valid = rec.validAfter()
		default:
			wrote++
			t.Errorf("a %s of %s that %s wrote: version %d → %d, audit events %d → %d",
				rec.op, rec.keyID, how, rec.version, v, rec.audits, a)
			continue
		}
		// And the key's secret answers accordingly, everywhere.
		for _, a := range c.validateAll(rec.secret.secret) {
			if a.err != nil || a.resp.GetValid() != valid {
				t.Errorf("after a %s of %s that %s: %v, want valid=%v", rec.op, rec.keyID, how, a, valid)
			}
		}
	}

	// Judge the calls.
	v := h.judge(names, phases...)
	var out strings.Builder
	fmt.Fprintf(&out, "%s: fault %v, recovery %v\n", f.name, size.fault, round(recovery))
	fmt.Fprintf(&out, "  %-16s %8s %8s %9s %9s %5s  %s\n", "validation", "requests", "err rate", "p50", "p99", "wrong", "errors")
	for _, p := range phases {
		fmt.Fprintf(&out, "  %-16s %8d %7.2f%% %9v %9v %5d  %v\n", p.name, p.calls,
			100*float64(p.errorCount())/float64(max(p.calls, 1)), round(p.lat.pct(50)), round(p.lat.pct(99)), p.wrong, sortedCounts(p.errors))
	}
	fmt.Fprintf(&out, "  %-16s %8s %8s %9s %9s  %s\n", "management", "calls", "failed", "p50", "p99", "outcomes")
	var faultWrites, faultFailed int
	for _, p := range phases {
		var lat durations
		outcomes := map[string]int{}
		n, nf := 0, 0
		for _, rec := range records {
			if phaseName(phases, rec.start) != p.name {
				continue
			}
			n++
			lat.add(time.Duration(rec.end - rec.start))
			outcomes[rec.op+"/"+rec.code.String()]++
			if rec.code != codes.OK {
				nf++
				if ph := strictPhase(phases, rec.start, rec.end); ph == phBefore || ph == phAfter || f.writesOK(rec.inst) && ph != phRecovery {
					t.Errorf("%s through %s failed with %v after %v in phase %q; want it to succeed",
						rec.op, names[rec.inst], rec.code, round(time.Duration(rec.end-rec.start)), ph)
				}
			}
		}
		if p.name == phFaultFirst || p.name == phFault {
			faultWrites += n
			faultFailed += nf
		}
		fmt.Fprintf(&out, "  %-16s %8d %8d %9v %9v  %v\n", p.name, n, nf, round(lat.pct(50)), round(lat.pct(99)), sortedCounts(outcomes))
	}
	fmt.Fprintf(&out, "  judged: %d had to refuse, %d had to accept, %d overlapped a write or followed a failed one; "+
		"wrong answers %d (accepted when revoked %d); failed writes %d: wrote nothing %d, carried out whole after the client's deadline %d, "+
		"committed but answered Unavailable (unconfirmed in the caches) %d, other %d",
		v.judgedRevoked, v.judgedValid, v.unjudged, v.violations+v.staleRefusals+v.wrongReasons, v.violations,
		failedCalls, failedCalls-wrote-lateWhole-unconfirmedWhole, lateWhole, unconfirmedWhole, wrote)
	t.Log(out.String())

	if n := v.violations + v.staleRefusals + v.wrongReasons; n > 0 {
		t.Errorf("%d wrong answers (%d accepted a secret that must be refused); first: %s", n, v.violations, strings.Join(v.samples, "; "))
	}
	// Errors: only where the row allows them, and only of the right kinds.
	for _, rc := range h.recs {
		for _, call := range rc.calls {
			if call.outcome != failed {
				continue
			}
			ph := strictPhase(phases, call.start, call.end)
			s := h.secs[call.secret]
			switch {
			case call.code != codes.Unavailable && call.code != codes.DeadlineExceeded:
				t.Errorf("%s on %s failed with %v in phase %q; only Unavailable or DeadlineExceeded may", call.method, names[call.inst], call.code, ph)
			case ph == phRecovery:
				// Counted in the table: the fault is over, recovery is not.
			case !f.errorOK(ph, int(call.inst), s):
				t.Errorf("%s of a %s secret on %s failed with %v in phase %q (at %v); none may fail there",
					call.method, s.writes[len(s.writes)-1].op, names[call.inst], call.code, ph, round(time.Duration(call.start)))
			}
		}
	}
	var lat durations
	lat.d = append(slices.Clone(phases[1].lat.d), phases[2].lat.d...)
	reqs, errs := phases[1].calls+phases[2].calls, phases[1].errorCount()+phases[2].errorCount()
	return fmt.Sprintf("%-54s %8d %6.2f%% %9v %9v %5d %18s %9v", f.name, reqs, 100*float64(errs)/float64(max(reqs, 1)),
		round(lat.pct(50)), round(lat.pct(99)), phases[1].wrong+phases[2].wrong,
		fmt.Sprintf("%d/%d", faultWrites-faultFailed, faultFailed), round(recovery))
}

// strictPhase is the phase whose rules apply to a call from start to end:
// the phase it started in, except that a call that started before the fault
// and ended after it began counts as one in the fault's first second.
func strictPhase(phases []*phaseFig, start, end int64) string {
	ph := phaseName(phases, start)
	if ph == phBefore && end >= phases[1].from {
		return phFaultFirst
	}
	return ph
}

// phaseName is the phase a call that started at start (history clock) counts in.
func phaseName(phases []*phaseFig, start int64) string {
	name := phases[0].name
	for _, p := range phases {
		if p.from <= start {
			name = p.name
		}
	}
	return name
}

func sortedCounts(m map[string]int) string {
	out := make([]string, 0, len(m))
	for k, n := range m {
		out = append(out, fmt.Sprintf("%s=%d", k, n))
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

// awaitRecovery waits until every instance reports itself ready with both
// stores, trusts its in-process tier again (its lease is fresh) and takes a
// write (EnableKey of an active key is a full coordinated write), and
// returns how long that took.
func (r *faultRig) awaitRecovery(probeID string, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	for _, in := range r.c.insts {
		for {
			err := r.recovered(in, probeID)
			if err == nil {
				break
			}
			if time.Since(start) > limit {
				return time.Since(start), fmt.Errorf("%s: %v", in.name, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return time.Since(start), nil
}

var quickHTTP = &http.Client{Timeout: time.Second, Transport: &http.Transport{Proxy: nil}}

func (r *faultRig) recovered(in *instance, probeID string) error {
	resp, err := quickHTTP.Get(in.BaseURL + "/readyz")
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var m map[string]string
	json.Unmarshal(body, &m)
	if resp.StatusCode != http.StatusOK || m["store"] != "ok" || m["redis"] != "ok" {
		return fmt.Errorf("/readyz %d %s", resp.StatusCode, body)
	}
	age, err := leaseAge(in)
	if err != nil {
		return err
	}
	if age >= 0.25 {
		return fmt.Errorf("lease age %vs: the in-process tier is not trusted", age)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := enable(probeID)(r.c.admin(ctx), in.kc); err != nil {
		return fmt.Errorf("EnableKey: %v", err)
	}
	return nil
}

// leaseAge reads keyward_cache_lease_age_seconds from in's /metrics.
func leaseAge(in *instance) (float64, error) {
	resp, err := quickHTTP.Get(in.BaseURL + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return 0, err
	}
	mf := fams["keyward_cache_lease_age_seconds"]
	if mf == nil || len(mf.GetMetric()) == 0 {
		return 0, fmt.Errorf("no keyward_cache_lease_age_seconds")
	}
	return mf.GetMetric()[0].GetGauge().GetValue(), nil
}

// directDB is a connection to the test database that does not go through
// any proxy, for checks behind keyward's back; one goroutine at a time.
type directDB struct{ conn *pgx.Conn }

func directConn(t *testing.T, dsn string) *directDB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect to the test database: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return &directDB{conn}
}

// state is the key's row version (-1: no row) and its number of audit events.
func (d *directDB) state(t *testing.T, id string) (version, audits int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := d.conn.QueryRow(ctx, `SELECT coalesce((SELECT version FROM api_keys WHERE id = $1), -1),
		(SELECT count(*) FROM audit_events WHERE key_id = $1)`, id).Scan(&version, &audits)
	if err != nil {
		t.Errorf("read key %s from the database: %v", id, err)
	}
	return version, audits
}

// countNamed is how many keys are named name in the database.
func (d *directDB) countNamed(t *testing.T, name string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var n int
	if err := d.conn.QueryRow(ctx, "SELECT count(*) FROM api_keys WHERE name = $1", name).Scan(&n); err != nil {
		t.Errorf("count keys named %q: %v", name, err)
	}
	return n
}
