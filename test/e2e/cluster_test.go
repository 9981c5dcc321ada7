package e2e

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/keymat"
	"github.com/keyward/keyward/internal/testenv"
)

// Helpers for tests running several `keyward serve` processes over one
// Postgres database and one private redis-server.

const (
	// msgConfirmed is what the cache logs when its invalidation stream
	// (re)confirms a heartbeat: from then on the in-process tier is trusted.
	msgConfirmed = "invalidation stream confirmed; in-process cache active"
	// msgLost is what it logs when the stream breaks.
	msgLost = "invalidation stream lost; in-process cache suspended"
	// rpcTimeout bounds every RPC the tests make.
	rpcTimeout = 5 * time.Second
)

// instance is one running keyward with a gRPC client.
type instance struct {
	*server
	name string
	kc   keywardv1.KeyServiceClient
}

// cluster is n keyward processes sharing one database and one Redis.
type cluster struct {
	dsn      string // the DSN the instances use (maybe through a proxy)
	redis    *redisProc
	adminKey string
	insts    []*instance
	// redisCluster is the Redis Cluster the instances use instead of redis.
	redisCluster *testenv.RedisCluster
}

// startCluster starts n instances, one after the other, with the given
// --postgres-dsn, --redis-addr of r, the in-process cache on (the default),
// and one KEYWARD_ADMIN_KEY; it returns once every instance has confirmed its
// invalidation stream, i.e. trusts its in-process tier. With r nil the
// instances share only the database (and keep no in-process cache).
func startCluster(t *testing.T, n int, dsn string, r *redisProc, args ...string) *cluster {
	t.Helper()
	admin, err := keymat.Generate("live")
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{dsn: dsn, redis: r, adminKey: admin.String()}
	if r != nil {
		args = append([]string{"--redis-addr", r.Addr}, args...)
	}
	for i := range n {
		s := startServerWith(t, serverOptions{
			DataDir:  t.TempDir(),
			DSN:      dsn,
			AdminKey: c.adminKey,
			Args:     slices.Clone(args),
		})
		conn, err := grpc.NewClient(s.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		c.insts = append(c.insts, &instance{server: s, name: fmt.Sprintf("keyward-%d", i), kc: keywardv1.NewKeyServiceClient(conn)})
	}
	for _, in := range c.insts {
		if r != nil && !in.WaitMsg(msgConfirmed, 1, 10*time.Second) {
			t.Fatalf("%s did not log %q within 10s of starting", in.name, msgConfirmed)
		}
	}
	return c
}

// startClusterOnRedisCluster is startCluster with the instances on a Redis
// Cluster: --redis-addr lists every node, so each instance uses a cluster
// client.
func startClusterOnRedisCluster(t *testing.T, n int, dsn string, rc *testenv.RedisCluster, args ...string) *cluster {
	t.Helper()
	c := startCluster(t, n, dsn, nil, append([]string{"--redis-addr", strings.Join(rc.Addrs, ",")}, args...)...)
	c.redisCluster = rc
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("Redis Cluster logs:\n%s", rc.Logs())
		}
	})
	for _, in := range c.insts {
		if !in.WaitMsg(msgConfirmed, 1, 10*time.Second) {
			t.Fatalf("%s did not log %q within 10s of starting", in.name, msgConfirmed)
		}
	}
	return c
}

// flushRedis empties the instances' Redis, or every node of their cluster.
func (c *cluster) flushRedis(t *testing.T) {
	t.Helper()
	if c.redisCluster != nil {
		if err := c.redisCluster.FlushAll(); err != nil {
			t.Fatal(err)
		}
		return
	}
	if got := c.redis.Do(t, "FLUSHALL"); got != "OK" {
		t.Fatalf("FLUSHALL: %q", got)
	}
}

// admin returns ctx carrying the admin credential.
func (c *cluster) admin(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.adminKey)
}

// ctx is a context for one RPC (and its cancel).
func rpcCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), rpcTimeout)
}

func (in *instance) validate(secret string) (*keywardv1.ValidateResponse, error) {
	ctx, cancel := rpcCtx()
	defer cancel()
	return in.kc.Validate(ctx, &keywardv1.ValidateRequest{Key: secret})
}

// createKey creates a key through in and returns its id and secret.
func (c *cluster) createKey(t *testing.T, in *instance, name string) (id, secret string) {
	t.Helper()
	ctx, cancel := rpcCtx()
	defer cancel()
	resp, err := in.kc.CreateKey(c.admin(ctx), &keywardv1.CreateKeyRequest{Key: &keywardv1.Key{DisplayName: name}})
	if err != nil {
		t.Fatalf("CreateKey %q on %s: %v", name, in.name, err)
	}
	return resp.GetKey().GetKeyId(), resp.GetSecret()
}

// mgmt runs one management call through in with the admin credential and
// returns the error and how long it took.
func (c *cluster) mgmt(in *instance, call func(ctx context.Context, kc keywardv1.KeyServiceClient) error) (time.Duration, error) {
	ctx, cancel := rpcCtx()
	defer cancel()
	t0 := time.Now()
	err := call(c.admin(ctx), in.kc)
	return time.Since(t0), err
}

func disable(id string) func(context.Context, keywardv1.KeyServiceClient) error {
	return func(ctx context.Context, kc keywardv1.KeyServiceClient) error {
		_, err := kc.DisableKey(ctx, &keywardv1.DisableKeyRequest{KeyId: id})
		return err
	}
}

func enable(id string) func(context.Context, keywardv1.KeyServiceClient) error {
	return func(ctx context.Context, kc keywardv1.KeyServiceClient) error {
		_, err := kc.EnableKey(ctx, &keywardv1.EnableKeyRequest{KeyId: id})
		return err
	}
}

func deleteKey(id string) func(context.Context, keywardv1.KeyServiceClient) error {
	return func(ctx context.Context, kc keywardv1.KeyServiceClient) error {
		_, err := kc.DeleteKey(ctx, &keywardv1.DeleteKeyRequest{KeyId: id})
		return err
	}
}

// regenerate stores the new secret in *secret.
func regenerate(id string, secret *string) func(context.Context, keywardv1.KeyServiceClient) error {
	return func(ctx context.Context, kc keywardv1.KeyServiceClient) error {
		resp, err := kc.RegenerateKey(ctx, &keywardv1.RegenerateKeyRequest{KeyId: id})
		if err == nil {
			*secret = resp.GetSecret()
		}
		return err
	}
}

// getKey reads a key through in (GetKey reads the store, not the caches).
func (c *cluster) getKey(t *testing.T, in *instance, id string) *keywardv1.Key {
	t.Helper()
	ctx, cancel := rpcCtx()
	defer cancel()
	resp, err := in.kc.GetKey(c.admin(ctx), &keywardv1.GetKeyRequest{KeyId: id})
	if err != nil {
		t.Fatalf("GetKey %s on %s: %v", id, in.name, err)
	}
	return resp.GetKey()
}

// countNamed is how many keys named name the store holds, read through in.
func (c *cluster) countNamed(t *testing.T, in *instance, name string) int {
	t.Helper()
	n, token := 0, ""
	for range 1000 {
		ctx, cancel := rpcCtx()
		resp, err := in.kc.ListKeys(c.admin(ctx), &keywardv1.ListKeysRequest{Query: name, PageSize: 100, PageToken: token})
		cancel()
		if err != nil {
			t.Fatalf("ListKeys %q on %s: %v", name, in.name, err)
		}
		for _, k := range resp.GetKeys() {
			if k.GetDisplayName() == name {
				n++
			}
		}
		if token = resp.GetNextPageToken(); token == "" {
			return n
		}
	}
	t.Fatal("ListKeys did not end after 1000 pages")
	return 0
}

// answer is one Validate outcome.
type answer struct {
	inst   *instance
	resp   *keywardv1.ValidateResponse
	err    error
	took   time.Duration
	offset time.Duration // when it was sent, after the moment validateAll was called
}

func (a answer) String() string {
	if a.err != nil {
		return fmt.Sprintf("%s: error %v", a.inst.name, status.Code(a.err))
	}
	return fmt.Sprintf("%s: valid=%v %v", a.inst.name, a.resp.GetValid(), a.resp.GetReason())
}

// validateAll validates secret on every instance at once.
func (c *cluster) validateAll(secret string) []answer {
	out := make([]answer, len(c.insts))
	var wg sync.WaitGroup
	t0 := time.Now()
	for i, in := range c.insts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			resp, err := in.validate(secret)
			out[i] = answer{inst: in, resp: resp, err: err, took: time.Since(start), offset: start.Sub(t0)}
		}()
	}
	wg.Wait()
	return out
}

// rawDB runs f on a direct connection to the test database (not through
// any proxy), for checks and manipulations behind keyward's back.
func rawDB(t *testing.T, dsn string, f func(ctx context.Context, conn *pgx.Conn)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect to the test database: %v", err)
	}
	defer conn.Close(context.Background())
	f(ctx, conn)
}

// dsnVia returns dsn with its host and port replaced by hostport (a proxy).
func dsnVia(t *testing.T, dsn, hostport string) string {
	t.Helper()
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal("the test DSN is not a valid URL")
		}
		u.Host = hostport
		return u.String()
	}
	host, port, _ := strings.Cut(hostport, ":")
	return dsn + " host=" + host + " port=" + port // key=value: a later key wins
}

// --- figures ---

// durations collects latencies; safe for concurrent use.
type durations struct {
	mu sync.Mutex
	d  []time.Duration
}

func (d *durations) add(x time.Duration) {
	d.mu.Lock()
	d.d = append(d.d, x)
	d.mu.Unlock()
}

func (d *durations) snapshot() []time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.d)
}

// percentile of sorted s, nearest rank.
func percentile(s []time.Duration, p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	i := int(math.Ceil(float64(len(s))*p/100)) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func (d *durations) pct(p float64) time.Duration {
	s := d.snapshot()
	slices.Sort(s)
	return percentile(s, p)
}

func (d *durations) String() string {
	s := d.snapshot()
	if len(s) == 0 {
		return "n=0"
	}
	slices.Sort(s)
	return fmt.Sprintf("n=%d p50=%v p99=%v max=%v", len(s),
		round(percentile(s, 50)), round(percentile(s, 99)), round(s[len(s)-1]))
}

func round(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Millisecond:
		return d.Round(100 * time.Microsecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

// --- background Validate load with known right answers ---

// loadKey is a secret the load validates, with the answer it must get.
type loadKey struct {
	kind   string // "active", "disabled", "unknown": for the figures
	secret string
	valid  bool
	reason keywardv1.ValidateResponse_Reason // when !valid
}

// phaseStats are the load's results for calls that started in one phase.
type phaseStats struct {
	calls       int
	wrongAccept int            // valid=true for a key that must be refused
	wrongRefuse int            // valid=false for an active key
	wrongReason int            // refused, for the wrong reason
	errs        map[string]int // "<kind>/<gRPC code>"
	lat         durations
	samples     []string // the first few wrong answers
	errSamples  []string // the first few errors
	start       time.Time
	end         time.Time
}

func (p *phaseStats) errors() int {
	n := 0
	for _, v := range p.errs {
		n += v
	}
	return n
}

func (p *phaseStats) wrong() int { return p.wrongAccept + p.wrongRefuse + p.wrongReason }

// load validates keys on every instance from a few goroutines until
// stopped, counting wrong answers and errors per phase.
type load struct {
	c       *cluster
	keys    []loadKey
	timeout time.Duration // each call's deadline
	phase   atomic.Pointer[string]

	mu     sync.Mutex
	phases map[string]*phaseStats
	order  []string

	stop     chan struct{}
	wg       sync.WaitGroup
	reported atomic.Bool
}

// startLoad starts workers goroutines in phase first, each call with a
// deadline of timeout. If the test ends without report (a t.Fatal), the
// figures are reported when it ends.
func startLoad(t *testing.T, c *cluster, keys []loadKey, workers int, timeout time.Duration, first string) *load {
	l := &load{c: c, keys: keys, timeout: timeout, phases: map[string]*phaseStats{}, stop: make(chan struct{})}
	l.setPhase(first)
	for w := range workers {
		l.wg.Add(1)
		go l.work(w)
	}
	t.Cleanup(func() {
		l.halt()
		if !l.reported.Load() {
			l.report(t)
		}
	})
	return l
}

// setPhase makes later calls count under name.
func (l *load) setPhase(name string) {
	l.mu.Lock()
	now := time.Now()
	if cur := l.phase.Load(); cur != nil {
		l.phases[*cur].end = now
	}
	if _, ok := l.phases[name]; !ok {
		l.phases[name] = &phaseStats{errs: map[string]int{}, start: now}
		l.order = append(l.order, name)
	}
	l.phase.Store(&name)
	l.mu.Unlock()
}

func (l *load) work(w int) {
	defer l.wg.Done()
	rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
	for i := w; ; i++ {
		select {
		case <-l.stop:
			return
		default:
		}
		k := l.keys[rng.IntN(len(l.keys))]
		in := l.c.insts[i%len(l.c.insts)]
		// The phase is read just before the call is sent, so a call counts
		// under the phase it was sent in (cases leave a few milliseconds
		// between a phase change and the fault, for calls already on the way).
		t0 := time.Now()
		phase := *l.phase.Load()
		ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
		resp, err := in.kc.Validate(ctx, &keywardv1.ValidateRequest{Key: k.secret})
		took := time.Since(t0)
		cancel()

		l.mu.Lock()
		p := l.phases[phase]
		p.calls++
		var wrong string
		switch {
		case err != nil:
			p.errs[k.kind+"/"+status.Code(err).String()]++
			if len(p.errSamples) < 10 {
				p.errSamples = append(p.errSamples, fmt.Sprintf("%s on %s at +%v (%v)",
					status.Code(err), in.name, t0.Sub(p.start).Round(time.Millisecond), round(took)))
			}
		case resp.GetValid() && !k.valid:
			p.wrongAccept++
			wrong = "accepted"
		case !resp.GetValid() && k.valid:
			p.wrongRefuse++
			wrong = "refused (" + resp.GetReason().String() + ")"
		case !resp.GetValid() && resp.GetReason() != k.reason:
			p.wrongReason++
			wrong = "refused for " + resp.GetReason().String() + ", want " + k.reason.String()
		}
		if wrong != "" && len(p.samples) < 10 {
			p.samples = append(p.samples, fmt.Sprintf("%s key on %s %s, %v after the phase began",
				k.kind, in.name, wrong, t0.Sub(p.start).Round(time.Millisecond)))
		}
		l.mu.Unlock()
		p.lat.add(took)
	}
}

// halt stops the load and waits for it; calling it twice is fine.
func (l *load) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
	l.mu.Lock()
	if cur := l.phase.Load(); cur != nil && l.phases[*cur].end.IsZero() {
		l.phases[*cur].end = time.Now()
	}
	l.mu.Unlock()
}

// stats returns one phase's results; call after halt.
func (l *load) stats(name string) *phaseStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	p, ok := l.phases[name]
	if !ok {
		return &phaseStats{errs: map[string]int{}}
	}
	return p
}

// report logs every phase and fails t on any wrong answer.
func (l *load) report(t *testing.T) {
	t.Helper()
	l.reported.Store(true)
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, name := range l.order {
		p := l.phases[name]
		errs := make([]string, 0, len(p.errs))
		for k, v := range p.errs {
			errs = append(errs, fmt.Sprintf("%s=%d", k, v))
		}
		sort.Strings(errs)
		t.Logf("load %-16s %5.2fs calls=%-6d wrong=%d (accepted %d, refused %d, reason %d) errors=%d %v validate %s",
			name, p.end.Sub(p.start).Seconds(), p.calls, p.wrong(), p.wrongAccept, p.wrongRefuse, p.wrongReason,
			p.errors(), errs, p.lat.String())
		if len(p.errSamples) > 0 {
			t.Logf("load %-16s first errors: %s", name, strings.Join(p.errSamples, "; "))
		}
		if p.wrong() > 0 {
			t.Errorf("load phase %q: %d wrong answers; first: %s", name, p.wrong(), strings.Join(p.samples, "; "))
		}
	}
}

// loadKeys makes the load's key set on c: active keys, disabled keys and
// well-formed secrets that were never issued, and warms every instance's
// caches with each of them.
func loadKeys(t *testing.T, c *cluster, active, disabled, unknown int) []loadKey {
	t.Helper()
	var out []loadKey
	for i := range active + disabled {
		id, secret := c.createKey(t, c.insts[i%len(c.insts)], "load-"+randomName(t))
		if i < active {
			out = append(out, loadKey{kind: "active", secret: secret, valid: true, reason: keywardv1.ValidateResponse_REASON_VALID})
			continue
		}
		if _, err := c.mgmt(c.insts[0], disable(id)); err != nil {
			t.Fatalf("DisableKey: %v", err)
		}
		out = append(out, loadKey{kind: "disabled", secret: secret, reason: keywardv1.ValidateResponse_REASON_DISABLED})
	}
	for range unknown {
		s, err := keymat.Generate("live")
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, loadKey{kind: "unknown", secret: s.String(), reason: keywardv1.ValidateResponse_REASON_NOT_FOUND})
	}
	for _, k := range out {
		for _, in := range c.insts {
			for range 2 {
				resp, err := in.validate(k.secret)
				if err != nil || resp.GetValid() != k.valid {
					t.Fatalf("warming the load's %s key on %s: %v %v", k.kind, in.name, resp, err)
				}
			}
		}
	}
	return out
}
