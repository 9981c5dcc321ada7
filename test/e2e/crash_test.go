package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/keymat"
	"github.com/keyward/keyward/internal/testenv"
)

// Crash safety (issue 9, item 3): concurrent clients drive mixed management
// operations against one `keyward serve` while it is killed with SIGKILL
// and restarted on the same store, or while its connections to Postgres are
// cut. Every attempt is recorded, acknowledged or not; afterwards, through a
// cleanly restarted server, the store must hold exactly what the
// acknowledged writes made, give or take unacknowledged writes that may or
// may not have committed, and nothing else: no half-written key, no second
// key for a retried create, one audit event per committed write.
//
// Reduced size by default (and in CI); KEYWARD_FULL=1 (make reliability)
// runs the full one: 10,000 operations and 20 faults per run.

// crashSize is how hard a run pushes.
type crashSize struct {
	ops     int // logical management operations (a create's retries are one)
	faults  int // kills, or cuts of the store's connections
	clients int // concurrent clients
}

func crashSizeFromEnv() crashSize {
	if os.Getenv("KEYWARD_FULL") == "1" {
		return crashSize{ops: 10000, faults: 20, clients: 16}
	}
	return crashSize{ops: 1000, faults: 5, clients: 8}
}

const crashRPCTimeout = 5 * time.Second

// TestCrashSafetyKill kills keyward (SIGKILL) at random moments under load
// and restarts it on the same store, on SQLite and on Postgres.
func TestCrashSafetyKill(t *testing.T) {
	t.Parallel()
	size := crashSizeFromEnv()
	for _, mode := range storeModes {
		t.Run(mode.name, func(t *testing.T) {
			dsn := mode.dsn(t)
			dir := t.TempDir()
			admin := mustSecret(t)
			opts := serverOptions{DataDir: dir, DSN: dsn, AdminKey: admin}
			cur := startServerWith(t, opts)
			r := newCrashRun(t, size, admin)
			r.tgt.serve(t, cur)
			r.run(func(i int, rng *rand.Rand) string {
				r.tgt.down()
				inflight := r.inflight.Load()
				cur.Kill(t)
				cur = startServerWith(t, opts)
				r.tgt.serve(t, cur)
				return fmt.Sprintf("%d in flight", inflight)
			})
			cur.Stop(t)
			r.verify(startServerWith(t, opts), dsn, dir)
		})
	}
}

// TestCrashSafetyStoreCut cuts keyward's connections to Postgres (a TCP
// proxy resets them all and refuses new ones, as a crashed or firewalled
// database would) at random moments under load, for 50 to 300 ms each time,
// without restarting keyward: connections die mid-transaction and during
// COMMIT. Calls during an outage must fail with Unavailable or
// DeadlineExceeded, and keyward must recover by itself.
func TestCrashSafetyStoreCut(t *testing.T) {
	t.Parallel()
	size := crashSizeFromEnv()
	dsn := testenv.Postgres(t)
	proxy := testenv.NewProxy(t, postgresHostPort(t, dsn))
	dir := t.TempDir()
	admin := mustSecret(t)
	s := startServerWith(t, serverOptions{DataDir: dir, DSN: dsnVia(t, dsn, proxy.Addr()), AdminKey: admin})
	r := newCrashRun(t, size, admin)
	r.tgt.serve(t, s)
	r.run(func(i int, rng *rand.Rand) string {
		outage := 50*time.Millisecond + time.Duration(rng.IntN(250))*time.Millisecond
		inflight := r.inflight.Load()
		r.outage.Add(1)
		proxy.Cut()
		time.Sleep(outage)
		if err := proxy.Restore(); err != nil {
			t.Fatal(err)
		}
		r.outage.Add(1)
		return fmt.Sprintf("%d in flight, %v", inflight, outage)
	})
	s.Stop(t)
	r.verify(startServerWith(t, serverOptions{DataDir: dir, DSN: dsn, AdminKey: admin}), dsn, dir)
}

// Kill ends the process with SIGKILL, as a crash would: no shutdown, no
// flush. The cleanup's graceful Stop is then a no-op.
func (s *server) Kill(t *testing.T) {
	t.Helper()
	s.stopped = true
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL keyward: %v", err)
	}
	<-s.done
}

func mustSecret(t *testing.T) string {
	t.Helper()
	s, err := keymat.Generate("live")
	if err != nil {
		t.Fatal(err)
	}
	return s.String()
}

// crashTarget is the keyward the clients talk to; a kill replaces it.
type crashTarget struct {
	mu    sync.Mutex
	up    chan struct{} // closed while a server is serving
	kc    keywardv1.KeyServiceClient
	conns []*grpc.ClientConn // all of them: a client may still hold an old one
}

// down makes clients wait before their next call.
func (c *crashTarget) down() {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.up:
		c.up = make(chan struct{})
	default:
	}
}

// serve points the clients at s.
func (c *crashTarget) serve(t *testing.T, s *server) {
	t.Helper()
	conn, err := grpc.NewClient(s.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conns = append(c.conns, conn)
	c.kc = keywardv1.NewKeyServiceClient(conn)
	select {
	case <-c.up:
	default:
		close(c.up)
	}
}

// client waits until a server is serving and returns its client.
func (c *crashTarget) client() keywardv1.KeyServiceClient {
	for {
		c.mu.Lock()
		up, kc := c.up, c.kc
		c.mu.Unlock()
		select {
		case <-up:
			return kc
		case <-time.After(time.Second):
		}
	}
}

func (c *crashTarget) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		conn.Close()
	}
	c.conns = nil
}

// opKind is one kind of management operation.
type opKind int

const (
	opCreate opKind = iota
	opDescribe
	opScopes
	opEnable
	opDisable
	opRegenerate
	opDelete
)

var opNames = map[opKind]string{
	opCreate: "CreateKey", opDescribe: "UpdateKey(description)", opScopes: "UpdateKey(scopes)",
	opEnable: "EnableKey", opDisable: "DisableKey", opRegenerate: "RegenerateKey", opDelete: "DeleteKey",
}

// auditActions are the audit actions each write records.
var auditActions = map[opKind]string{
	opCreate: "key.create", opDescribe: "key.update", opScopes: "key.update",
	opEnable: "key.enable", opDisable: "key.disable", opRegenerate: "key.regenerate", opDelete: "key.delete",
}

// crashAttempt is one call a client made, and what came of it.
type crashAttempt struct {
	kind   opKind
	desc   string   // opDescribe, opCreate
	scopes []string // opScopes, opCreate
	acked  bool     // the call returned OK (or a delete's NotFound, see gone)
	gone   bool     // a delete acknowledged by NotFound: an earlier attempt deleted it
	result *keywardv1.Key
	secret string // from an acknowledged create or regenerate
	code   codes.Code
}

// crashKey is everything one client did to one key, in order.
type crashKey struct {
	rid, name string
	id        string // once known
	create    crashAttempt
	// createAcked: the create returned OK, or a retry's AlreadyExists named the key.
	// By AlreadyExists, the secret never arrived.
	createAcked bool
	history     []*crashAttempt
}

// crashRun is one run: the clients, the faults and the record.
type crashRun struct {
	t        *testing.T
	size     crashSize
	adminKey string
	runID    string
	tgt      *crashTarget
	started  atomic.Int64 // operations begun
	ops      atomic.Int64 // operations done
	inflight atomic.Int64 // calls on the wire now
	// faulted is set once every fault is injected: the clients go on
	// until then, even past size.ops (an outage's failed calls count).
	faulted atomic.Bool
	outage  atomic.Int64 // odd while the store is cut
	// recoverFrom is when the last fault ended (UnixNano), until a call
	// succeeds; recoveries are how long that took, after each fault.
	recoverFrom atomic.Int64
	recoveries  durations

	mu          sync.Mutex
	keys        []*crashKey
	violations  []string
	acked       int
	unacked     int
	retries     int // create retries with the same request_id
	conflicts   int // retries answered AlreadyExists
	errCodes    map[string]int
	outageCalls map[string]int // calls begun and ended within one outage, by outcome
	faultNotes  []string
	took        time.Duration
	// committed counts unacknowledged writes that versions show committed.
	committed int
}

func newCrashRun(t *testing.T, size crashSize, admin string) *crashRun {
	r := &crashRun{
		t: t, size: size, adminKey: admin, runID: randomName(t),
		tgt:      &crashTarget{up: make(chan struct{})},
		errCodes: map[string]int{}, outageCalls: map[string]int{},
	}
	t.Cleanup(r.tgt.close)
	return r
}

func (r *crashRun) violate(format string, args ...any) {
	r.mu.Lock()
	r.violations = append(r.violations, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

// call runs one RPC on the current server with the admin credential.
func (r *crashRun) call(f func(ctx context.Context, kc keywardv1.KeyServiceClient) error) (codes.Code, error) {
	kc := r.tgt.client()
	ctx, cancel := context.WithTimeout(context.Background(), crashRPCTimeout)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+r.adminKey)
	before := r.outage.Load()
	r.inflight.Add(1)
	err := f(ctx, kc)
	r.inflight.Add(-1)
	if from := r.recoverFrom.Load(); err == nil && from != 0 && r.recoverFrom.CompareAndSwap(from, 0) {
		r.recoveries.add(time.Since(time.Unix(0, from)))
	}
	if after := r.outage.Load(); before == after && before%2 == 1 {
		// Begun and ended while the store was cut.
		r.mu.Lock()
		r.outageCalls[status.Code(err).String()]++
		r.mu.Unlock()
		if err == nil {
			r.violate("a call succeeded while the store was cut")
		}
	}
	return status.Code(err), err
}

// failed records an unacknowledged attempt and waits a moment before the
// client goes on (the server is restarting, or the store is cut).
func (r *crashRun) failed(a *crashAttempt, code codes.Code, err error) {
	a.code = code
	r.mu.Lock()
	r.unacked++
	r.errCodes[opNames[a.kind]+"/"+code.String()]++
	r.mu.Unlock()
	if code != codes.Unavailable && code != codes.DeadlineExceeded {
		r.violate("%s failed with %v (want Unavailable or DeadlineExceeded): %v", opNames[a.kind], code, err)
	}
	time.Sleep(20 * time.Millisecond)
}

func (r *crashRun) ack() {
	r.mu.Lock()
	r.acked++
	r.mu.Unlock()
}

// run starts the clients and injects size.faults faults, one at a random
// moment in each of as many equal slices of the first 90% of the
// operations, then waits for the clients.
func (r *crashRun) run(fault func(i int, rng *rand.Rand) string) {
	t := r.t
	start := time.Now()
	var wg sync.WaitGroup
	for w := range r.size.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.client(w)
		}()
	}
	clientsDone := make(chan struct{})
	go func() { wg.Wait(); close(clientsDone) }()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	span := int64(r.size.ops) * 9 / 10 / int64(r.size.faults)
	for i := range r.size.faults {
		at := int64(i)*span + rng.Int64N(span)
		for r.started.Load() < at {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(time.Duration(rng.IntN(5000)) * time.Microsecond)
		// Each fault starts once a call has succeeded after the one before:
		// two faults with no success between them would be one outage, and
		// its recovery time would be counted once.
		for wait := time.Now().Add(time.Minute); r.recoverFrom.Load() != 0; time.Sleep(time.Millisecond) {
			if time.Now().After(wait) {
				t.Fatalf("no call succeeded within a minute of fault #%d ending", i)
			}
			select {
			case <-clientsDone:
				t.Fatalf("the clients finished before fault #%d", i+1)
			default:
			}
		}
		note := fault(i, rng)
		r.recoverFrom.Store(time.Now().UnixNano())
		r.faultNotes = append(r.faultNotes, fmt.Sprintf("#%d at op %d: %s", i+1, r.started.Load(), note))
	}
	r.faulted.Store(true)
	select {
	case <-clientsDone:
	case <-time.After(10 * time.Minute):
		t.Fatal("the clients did not finish within 10 minutes")
	}
	r.took = time.Since(start)
	// Recovered by itself: a write works at once (and ends the last
	// fault's recovery if no client call did).
	if _, err := r.call(func(ctx context.Context, kc keywardv1.KeyServiceClient) error {
		_, err := kc.CreateKey(ctx, &keywardv1.CreateKeyRequest{Key: &keywardv1.Key{DisplayName: "after the faults"}})
		return err
	}); err != nil {
		r.violate("a CreateKey after the run failed: %v", err)
	}
	if n := len(r.recoveries.snapshot()); n != r.size.faults {
		r.violate("%d faults, but a call succeeded after only %d of them", r.size.faults, n)
	}
}

// client is one concurrent client: it owns the keys it creates, so each
// key's history is one sequence of calls.
func (r *crashRun) client(w int) {
	rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
	var mine []*crashKey
	for seq := 0; r.started.Add(1) <= int64(r.size.ops) || !r.faulted.Load(); seq++ {
		r.ops.Add(1)
		if len(mine) == 0 || rng.IntN(100) < 20 {
			if k := r.create(w, seq, rng); k.id != "" {
				mine = append(mine, k)
			}
			continue
		}
		i := rng.IntN(len(mine))
		k := mine[i]
		var gone bool
		switch p := rng.IntN(100); {
		case p < 25:
			r.update(k, &crashAttempt{kind: opDescribe, desc: fmt.Sprintf("d%d-%d", w, seq)})
		case p < 45:
			r.update(k, &crashAttempt{kind: opScopes, scopes: randomScopes(rng)})
		case p < 60:
			r.update(k, &crashAttempt{kind: opEnable})
		case p < 75:
			r.update(k, &crashAttempt{kind: opDisable})
		case p < 90:
			r.update(k, &crashAttempt{kind: opRegenerate})
		default:
			gone = r.delete(k)
		}
		if gone {
			mine = append(mine[:i], mine[i+1:]...)
		}
	}
}

func randomScopes(rng *rand.Rand) []string {
	all := []string{"orders:read", "orders:write", "billing:read", "telemetry:*"}
	var out []string
	for _, s := range all {
		if rng.IntN(2) == 0 {
			out = append(out, s)
		}
	}
	return out
}

var alreadyUsedBy = regexp.MustCompile(`request_id already used by key (key_[0-9A-Za-z]+)`)

// create creates a key with a request_id and retries it, with the same
// request_id, until it is acknowledged: by OK, or by AlreadyExists naming
// the key an earlier attempt made.
func (r *crashRun) create(w, seq int, rng *rand.Rand) *crashKey {
	rid := fmt.Sprintf("%s-%d-%d", r.runID, w, seq)
	k := &crashKey{rid: rid, name: "crash " + rid}
	k.create = crashAttempt{kind: opCreate, desc: "created " + rid, scopes: randomScopes(rng)}
	r.mu.Lock()
	r.keys = append(r.keys, k)
	r.mu.Unlock()
	deadline := time.Now().Add(time.Minute)
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		if attempt > 0 {
			r.mu.Lock()
			r.retries++
			r.mu.Unlock()
		}
		var resp *keywardv1.CreateKeyResponse
		code, err := r.call(func(ctx context.Context, kc keywardv1.KeyServiceClient) error {
			var err error
			resp, err = kc.CreateKey(ctx, &keywardv1.CreateKeyRequest{
				Key:       &keywardv1.Key{DisplayName: k.name, Description: k.create.desc, Scopes: k.create.scopes},
				RequestId: rid,
			})
			return err
		})
		switch {
		case err == nil:
			k.id, k.createAcked = resp.GetKey().GetKeyId(), true
			k.create.acked, k.create.result, k.create.secret = true, resp.GetKey(), resp.GetSecret()
			r.ack()
			return k
		case code == codes.AlreadyExists:
			m := alreadyUsedBy.FindStringSubmatch(status.Convert(err).Message())
			if attempt == 0 || m == nil {
				r.violate("CreateKey %s, attempt %d: %v", rid, attempt+1, err)
				return k
			}
			k.id, k.createAcked = m[1], true
			k.create.acked = true
			r.mu.Lock()
			r.conflicts++
			r.mu.Unlock()
			r.ack()
			return k
		}
		a := crashAttempt{kind: opCreate}
		r.failed(&a, code, err)
		if code != codes.Unavailable && code != codes.DeadlineExceeded {
			return k // not retryable: left unacknowledged
		}
	}
	r.violate("CreateKey %s: not acknowledged within a minute of retries", rid)
	return k
}

// update runs one write other than create and delete, once: a failure is
// recorded and not retried, so unacknowledged writes stay in the history.
func (r *crashRun) update(k *crashKey, a *crashAttempt) {
	k.history = append(k.history, a)
	var key *keywardv1.Key
	code, err := r.call(func(ctx context.Context, kc keywardv1.KeyServiceClient) error {
		var err error
		switch a.kind {
		case opDescribe:
			var resp *keywardv1.UpdateKeyResponse
			resp, err = kc.UpdateKey(ctx, &keywardv1.UpdateKeyRequest{
				Key:        &keywardv1.Key{KeyId: k.id, Description: a.desc},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"description"}},
			})
			key = resp.GetKey()
		case opScopes:
			var resp *keywardv1.UpdateKeyResponse
			resp, err = kc.UpdateKey(ctx, &keywardv1.UpdateKeyRequest{
				Key:        &keywardv1.Key{KeyId: k.id, Scopes: a.scopes},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"scopes"}},
			})
			key = resp.GetKey()
		case opEnable:
			var resp *keywardv1.EnableKeyResponse
			resp, err = kc.EnableKey(ctx, &keywardv1.EnableKeyRequest{KeyId: k.id})
			key = resp.GetKey()
		case opDisable:
			var resp *keywardv1.DisableKeyResponse
			resp, err = kc.DisableKey(ctx, &keywardv1.DisableKeyRequest{KeyId: k.id})
			key = resp.GetKey()
		case opRegenerate:
			var resp *keywardv1.RegenerateKeyResponse
			resp, err = kc.RegenerateKey(ctx, &keywardv1.RegenerateKeyRequest{KeyId: k.id})
			key, a.secret = resp.GetKey(), resp.GetSecret()
		}
		return err
	})
	if err != nil {
		r.failed(a, code, err)
		return
	}
	a.acked, a.result = true, key
	r.ack()
}

// delete deletes k, retrying until acknowledged: by OK, or by NotFound
// after an earlier attempt that may have committed. It reports whether k
// is gone.
func (r *crashRun) delete(k *crashKey) bool {
	deadline := time.Now().Add(time.Minute)
	for first := true; time.Now().Before(deadline); first = false {
		a := &crashAttempt{kind: opDelete}
		k.history = append(k.history, a)
		code, err := r.call(func(ctx context.Context, kc keywardv1.KeyServiceClient) error {
			_, err := kc.DeleteKey(ctx, &keywardv1.DeleteKeyRequest{KeyId: k.id})
			return err
		})
		switch {
		case err == nil:
			a.acked = true
			r.ack()
			return true
		case code == codes.NotFound && !first:
			a.acked, a.gone = true, true
			r.ack()
			return true
		}
		r.failed(a, code, err)
		if code != codes.Unavailable && code != codes.DeadlineExceeded {
			return false
		}
	}
	r.violate("DeleteKey %s: not acknowledged within a minute of retries", k.id)
	return false
}

// --- the model ---

// keyState is what a key looks like to the model: the fields the writes
// set, and its version (its etag).
type keyState struct {
	present bool
	version int64
	name    string
	desc    string
	scopes  string // comma-joined, in order
	active  bool
	masked  string // "" when unknown (an unacknowledged regenerate)
	// notMasked is what masked must differ from when it is unknown: the
	// secret an unacknowledged regenerate replaced.
	notMasked string
}

func (s keyState) id() string {
	return fmt.Sprintf("%v|%d|%q|%q|%q|%v|%q|%q", s.present, s.version, s.name, s.desc, s.scopes, s.active, s.masked, s.notMasked)
}

func (s keyState) String() string {
	if !s.present {
		return "absent"
	}
	m := s.masked
	if m == "" {
		m = "?"
	}
	return fmt.Sprintf("v%d desc=%q scopes=[%s] active=%v masked=%s", s.version, s.desc, s.scopes, s.active, m)
}

func stateOf(k *keywardv1.Key) keyState {
	return keyState{
		present: true, version: etagVersion(k.GetEtag()), name: k.GetDisplayName(), desc: k.GetDescription(),
		scopes: strings.Join(k.GetScopes(), ","), active: k.GetState() == keywardv1.Key_STATE_ACTIVE,
		masked: k.GetMaskedKey(),
	}
}

func etagVersion(etag string) int64 {
	v, err := strconv.ParseInt(etag, 10, 64)
	if err != nil {
		return -1
	}
	return v
}

// matches reports whether the observed state got is one the model allows.
func (s keyState) matches(got keyState) bool {
	if s.present != got.present {
		return false
	}
	if !s.present {
		return true
	}
	if s.version != got.version || s.name != got.name || s.desc != got.desc || s.scopes != got.scopes || s.active != got.active {
		return false
	}
	if s.masked != "" {
		return s.masked == got.masked
	}
	return got.masked != "" && got.masked != s.notMasked
}

// apply is the state a write leaves on s, had it committed.
func (s keyState) apply(a *crashAttempt) keyState {
	switch a.kind {
	case opDescribe:
		s.desc = a.desc
	case opScopes:
		s.scopes = strings.Join(a.scopes, ",")
	case opEnable:
		s.active = true
	case opDisable:
		s.active = false
	case opRegenerate:
		s.notMasked, s.masked = s.masked, ""
	case opDelete:
		return keyState{}
	}
	s.version++
	return s
}

// maskOf is how Keyward displays secret: its visible start (the prefix and
// six more characters), an ellipsis, its last four.
func maskOf(secret string) string {
	i := strings.LastIndexByte(secret, '_') + 1 + 6
	if i > len(secret) || len(secret) < 4 {
		return "?"
	}
	return secret[:i] + "…" + secret[len(secret)-4:]
}

// states is a set of states a key may be in.
type states map[string]keyState

func (ss states) add(s keyState) { ss[s.id()] = s }

func (ss states) String() string {
	var out []string
	for _, s := range ss {
		out = append(out, s.String())
	}
	sort.Strings(out)
	return "{" + strings.Join(out, "; ") + "}"
}

// replay walks k's history and returns the states the store may hold for
// it: after each acknowledged write exactly its result (which must itself
// follow from an allowed state by that write); after an unacknowledged one,
// with or without it. Violations are reported through r. known is the
// version the last acknowledged write left (0: none, or a delete).
func (r *crashRun) replay(k *crashKey) (cand states, known int64) {
	want := keyState{present: true, version: 1, name: k.name, desc: k.create.desc,
		scopes: strings.Join(k.create.scopes, ","), active: true}
	cand = states{}
	switch {
	case k.create.result != nil:
		got := stateOf(k.create.result)
		want.masked = maskOf(k.create.secret)
		if !want.matches(got) {
			r.violate("key %s: CreateKey answered %v, want %v", k.id, got, want)
		}
		cand.add(got)
		known = 1
	case k.createAcked: // by AlreadyExists: created, with a secret we never saw
		cand.add(want)
		known = 1
		r.committed++
	default: // never acknowledged: made or not
		cand.add(want)
		cand.add(keyState{})
	}
	for i, a := range k.history {
		next := states{}
		switch {
		case !a.acked:
			for _, c := range cand {
				next.add(c)
				if c.present {
					next.add(c.apply(a))
				}
			}
		case a.kind == opDelete:
			ok := false
			for _, c := range cand {
				ok = ok || c.present != a.gone
			}
			if !ok {
				r.violate("key %s: %s #%d acknowledged (gone=%v) but the model allows only %v", k.id, opNames[a.kind], i+1, a.gone, cand)
			}
			next.add(keyState{})
			known = 0
		default:
			got := stateOf(a.result)
			if known > 0 && got.version > known+1 {
				r.committed += int(got.version - known - 1)
			}
			known = got.version
			if a.kind == opRegenerate && got.masked != maskOf(a.secret) {
				r.violate("key %s: RegenerateKey #%d answered masked key %q for a secret that masks as %q", k.id, i+1, got.masked, maskOf(a.secret))
			}
			ok := false
			for _, c := range cand {
				if !c.present {
					continue
				}
				w := c.apply(a)
				if a.kind == opRegenerate {
					// The new secret is the one the answer carries.
					ok = ok || (w.matches(got) && got.masked == maskOf(a.secret))
				} else {
					ok = ok || w.matches(got)
				}
			}
			if !ok {
				r.violate("key %s: %s #%d answered %v, which no allowed state %v leads to", k.id, opNames[a.kind], i+1, got, cand)
			}
			next.add(got)
		}
		cand = next
		if len(cand) > 1<<14 {
			r.violate("key %s: more than %d possible states; the model gives up", k.id, 1<<14)
			return nil, 0
		}
	}
	return cand, known
}

// secrets are the secrets of k that acknowledged writes returned, oldest first.
func (k *crashKey) secrets() []string {
	var out []string
	if k.create.secret != "" {
		out = append(out, k.create.secret)
	}
	for _, a := range k.history {
		if a.acked && a.secret != "" {
			out = append(out, a.secret)
		}
	}
	return out
}

// verify compares the store, read through s (a fresh server on the same
// store), with the record, then stops s and runs `keyward audit verify`.
func (r *crashRun) verify(s *server, dsn, dir string) {
	t := r.t
	conn, err := grpc.NewClient(s.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	kc := keywardv1.NewKeyServiceClient(conn)
	admin := func() (context.Context, context.CancelFunc) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+r.adminKey), cancel
	}

	// Every key in the store, by id and by name.
	byID := map[string]*keywardv1.Key{}
	byName := map[string][]*keywardv1.Key{}
	for token := ""; ; {
		ctx, cancel := admin()
		resp, err := kc.ListKeys(ctx, &keywardv1.ListKeysRequest{PageSize: 1000, PageToken: token})
		cancel()
		if err != nil {
			t.Fatalf("ListKeys after the run: %v", err)
		}
		for _, k := range resp.GetKeys() {
			byID[k.GetKeyId()] = k
			byName[k.GetDisplayName()] = append(byName[k.GetDisplayName()], k)
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}

	validate := func(secret string) (*keywardv1.ValidateResponse, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return kc.Validate(ctx, &keywardv1.ValidateRequest{Key: secret})
	}

	var present, deleted, neverAcked, validated, auditEvents int
	modelNames := map[string]bool{}
	for _, k := range r.keys {
		modelNames[k.name] = true
		named := byName[k.name]
		if len(named) > 1 {
			r.violate("request_id %s made %d keys: %v", k.rid, len(named), idsOf(named))
		}
		id := k.id
		if id == "" {
			neverAcked++
			if len(named) == 1 {
				id = named[0].GetKeyId() // made by an unacknowledged create
			}
		}
		for _, n := range named {
			if id != "" && n.GetKeyId() != id {
				r.violate("request_id %s: the store has key %s named %q; the create was acknowledged as %s", k.rid, n.GetKeyId(), k.name, id)
			}
		}
		cand, known := r.replay(k)
		if cand == nil {
			continue
		}
		got := keyState{}
		if sk, ok := byID[id]; ok && id != "" {
			got = stateOf(sk)
			present++
		} else if id != "" {
			deleted++
			ctx, cancel := admin()
			_, err := kc.GetKey(ctx, &keywardv1.GetKeyRequest{KeyId: id})
			cancel()
			if status.Code(err) != codes.NotFound {
				r.violate("key %s is not listed, but GetKey answers %v", id, err)
			}
		}
		if known > 0 && got.version > known {
			r.committed += int(got.version - known)
		}
		match := false
		for _, c := range cand {
			match = match || c.matches(got)
		}
		if !match {
			r.violate("key %s (%s): the store holds %v, the record allows only %v", id, k.rid, got, cand)
		}

		// Secrets: the current one (if an acknowledged write returned it)
		// validates as the state says; every other is refused as unknown.
		for _, secret := range k.secrets() {
			resp, err := validate(secret)
			validated++
			want := keywardv1.ValidateResponse_REASON_NOT_FOUND
			if got.present && maskOf(secret) == got.masked {
				want = keywardv1.ValidateResponse_REASON_VALID
				if !got.active {
					want = keywardv1.ValidateResponse_REASON_DISABLED
				}
			}
			if err != nil || resp.GetReason() != want {
				r.violate("key %s: Validate of a secret it was given (%s): %v %v, want %v", id, maskOf(secret), resp.GetReason(), err, want)
			}
		}

		if id != "" {
			auditEvents += r.checkAudit(kc, admin, k, id, got)
		}
	}
	for name, ks := range byName {
		if strings.HasPrefix(name, "crash ") && !modelNames[name] {
			r.violate("the store has keys no client created: %q %v", name, idsOf(ks))
		}
	}

	// The whole trail: every event of the run's keys is one of the events
	// counted per key, and the chain verifies.
	total := 0
	for token := ""; ; {
		ctx, cancel := admin()
		resp, err := kc.ListAuditEvents(ctx, &keywardv1.ListAuditEventsRequest{PageSize: 1000, PageToken: token})
		cancel()
		if err != nil {
			t.Fatalf("ListAuditEvents: %v", err)
		}
		total += len(resp.GetAuditEvents())
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	s.Stop(t)
	args := []string{"audit", "verify", "--data-dir", dir}
	if dsn != "" {
		args = append(args, "--postgres-dsn", dsn)
	}
	out, errOut, code, _ := runKeyward(t, time.Minute, args...)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("audit trail verified: %d events", total)) {
		r.violate("keyward audit verify: exit %d, want 0 and %d events\nstdout: %s\nstderr: %s", code, total, out, errOut)
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	var codesSeen []string
	for c, n := range r.errCodes {
		codesSeen = append(codesSeen, fmt.Sprintf("%s=%d", c, n))
	}
	sort.Strings(codesSeen)
	var outage []string
	for c, n := range r.outageCalls {
		outage = append(outage, fmt.Sprintf("%s=%d", c, n))
	}
	sort.Strings(outage)
	t.Logf("faults: %s", strings.Join(r.faultNotes, "; "))
	t.Logf("first successful call after each fault ended (restart done, or connection restored): %s", r.recoveries.String())
	t.Logf("%d clients, %d operations in %v (%.0f/s): %d acknowledged, %d unacknowledged attempts, "+
		"%d create retries with the same request_id (%d answered AlreadyExists naming the key), %d faults",
		r.size.clients, r.ops.Load(), r.took.Round(time.Millisecond), float64(r.ops.Load())/r.took.Seconds(),
		r.acked, r.unacked, r.retries, r.conflicts, r.size.faults)
	t.Logf("unacknowledged attempts by code: %s; %d of them had committed, as the versions (or AlreadyExists) show",
		strings.Join(codesSeen, " "), r.committed)
	if len(outage) > 0 {
		t.Logf("calls begun and ended within an outage: %s", strings.Join(outage, " "))
	}
	t.Logf("store after the run: %d keys created (%d creates never acknowledged), %d present, %d deleted; "+
		"%d secrets validated; %d audit events of the run's keys, %d in all, chain verified by keyward audit verify",
		len(r.keys), neverAcked, present, deleted, validated, auditEvents, total)
	t.Logf("violations=%d", len(r.violations))
	for i, v := range r.violations {
		if i == 30 {
			t.Errorf("… and %d more violations", len(r.violations)-30)
			break
		}
		t.Errorf("violation: %s", v)
	}
}

// checkAudit reads key id's audit events: one per committed write, their
// versions consecutive from the create's 1, each acknowledged write's
// version recorded with its action, and the last event's state the
// store's. It returns how many events the key has.
func (r *crashRun) checkAudit(kc keywardv1.KeyServiceClient, admin func() (context.Context, context.CancelFunc), k *crashKey, id string, got keyState) int {
	var events []*keywardv1.AuditEvent
	for token := ""; ; {
		ctx, cancel := admin()
		resp, err := kc.ListAuditEvents(ctx, &keywardv1.ListAuditEventsRequest{KeyId: id, PageSize: 1000, PageToken: token})
		cancel()
		if err != nil {
			r.t.Fatalf("ListAuditEvents %s: %v", id, err)
		}
		events = append(events, resp.GetAuditEvents()...)
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	sort.Slice(events, func(i, j int) bool { return events[i].GetSequence() < events[j].GetSequence() })
	var trail []string
	for _, e := range events {
		trail = append(trail, fmt.Sprintf("%s %s→%s", e.GetAction(), e.GetBefore().GetEtag(), e.GetAfter().GetEtag()))
	}
	bad := func(format string, args ...any) {
		r.violate("key %s audit trail [%s]: %s", id, strings.Join(trail, ", "), fmt.Sprintf(format, args...))
	}
	byVersion := map[int64]*keywardv1.AuditEvent{}
	var last int64
	for i, e := range events {
		switch {
		case i == 0 && (e.GetAction() != "key.create" || e.GetBefore() != nil || e.GetAfter().GetEtag() != "1"):
			bad("the first event is not a create of version 1")
			return len(events)
		case i > 0 && e.GetAction() == "key.create":
			bad("a second create")
			return len(events)
		case i > 0 && etagVersion(e.GetBefore().GetEtag()) != last:
			bad("event %d starts from version %s, the one before ended at %d", e.GetSequence(), e.GetBefore().GetEtag(), last)
			return len(events)
		case e.GetAction() == "key.delete":
			if e.GetAfter() != nil || i != len(events)-1 {
				bad("a delete with an after state, or not last")
				return len(events)
			}
			continue
		case etagVersion(e.GetAfter().GetEtag()) != last+1:
			bad("event %d writes version %s after %d", e.GetSequence(), e.GetAfter().GetEtag(), last)
			return len(events)
		}
		last = etagVersion(e.GetAfter().GetEtag())
		byVersion[last] = e
	}
	if len(events) == 0 {
		bad("no events")
		return 0
	}
	lastEvent := events[len(events)-1]
	switch {
	case got.present && lastEvent.GetAction() == "key.delete":
		bad("the key is present but its trail ends with a delete")
	case !got.present && lastEvent.GetAction() != "key.delete":
		bad("the key is gone but its trail does not end with a delete")
	case got.present:
		after := stateOf(lastEvent.GetAfter())
		if !after.matches(got) {
			bad("the last event's state %v is not the store's %v", after, got)
		}
	}
	// Each acknowledged write is in the trail, under its version and action.
	acked := append([]*crashAttempt{&k.create}, k.history...)
	for _, a := range acked {
		if !a.acked || a.result == nil {
			continue
		}
		v := etagVersion(a.result.GetEtag())
		e := byVersion[v]
		if e == nil || e.GetAction() != auditActions[a.kind] {
			bad("no %s event for the acknowledged %s of version %d", auditActions[a.kind], opNames[a.kind], v)
			continue
		}
		if want := stateOf(a.result); !stateOf(e.GetAfter()).matches(want) {
			bad("event %d records %v, the acknowledged %s answered %v", e.GetSequence(), stateOf(e.GetAfter()), opNames[a.kind], want)
		}
	}
	return len(events)
}

func idsOf(ks []*keywardv1.Key) []string {
	var out []string
	for _, k := range ks {
		out = append(out, k.GetKeyId())
	}
	return out
}
