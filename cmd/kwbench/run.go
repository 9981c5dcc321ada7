package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward/cmd/kwbench/internal/loadgen"
	"github.com/keyward/keyward/internal/keymat"
)

type options struct {
	duration    time.Duration
	warmup      time.Duration
	conc        []int
	keys        int
	loadKeys    int
	conns       int
	rounds      int
	retries     int
	quietWait   time.Duration
	retryBudget time.Duration
	seedWorkers int
	disableKeys int
	postgres    string
	redis       string
	paths       []string
	skipAllocs  bool
	skipDisable bool
	markdown    string
	args        []string
}

// path is one of Keyward's Validate paths with the baseline it is judged against.
type path struct {
	id, name string
	baseline string
	args     []string // `keyward serve` flags beyond the common ones
}

func (e *env) paths() []path {
	return []path{
		{"inproc", "in-process hit", "noop", []string{"--redis-addr", e.redis}},
		{"redis", "Redis hit", "redis-get", []string{"--redis-addr", e.redis, "--local-cache=false"}},
		{"store", "store hit", "pgx-select", []string{"--local-cache=false"}},
	}
}

// env is what one run has set up.
type env struct {
	opt      options
	root     string // module root
	tmp      string
	self     string // this binary, re-executed for child roles
	keyward  string // the built keyward binary
	db       *benchDB
	redis    string
	admin    string
	keysFile string
	// namespace is passed as --redis-namespace when keyward has the flag.
	namespace string
	// extra is the time spent so far waiting for quiet and repeating pairs.
	extra time.Duration
}

// randomSuffix is a random name part for things this run owns.
func (e *env) randomSuffix() string {
	return strconv.FormatUint(rand.Uint64()>>16, 36)
}

func parseFlags(args []string) (options, error) {
	o := options{args: args}
	fs := flag.NewFlagSet("kwbench", flag.ContinueOnError)
	fs.DurationVar(&o.duration, "d", 5*time.Second, "measured time per step (path × concurrency)")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured load before each step")
	conc := fs.String("c", "1,16,64", "comma-separated concurrency steps")
	fs.IntVar(&o.keys, "keys", 100000, "keys seeded into the store")
	fs.IntVar(&o.loadKeys, "load-keys", 10000, "distinct seeded keys the load cycles through")
	fs.IntVar(&o.conns, "conns", 4, "gRPC connections of the load generator")
	fs.IntVar(&o.retries, "retries", 2, "measure a baseline/Keyward pair again, up to this many times, if other processes used the CPU during it")
	fs.DurationVar(&o.quietWait, "quiet-wait", 10*time.Second, "before each pair, wait up to this long for other processes to stop using the CPU")
	fs.DurationVar(&o.retryBudget, "retry-budget", 3*time.Minute, "total time the waits and repeated pairs may add to a run; then every pair is measured once, as it comes")
	fs.IntVar(&o.rounds, "rounds", 1, "measure every step this many times (baseline and Keyward back to back) and report the median")
	fs.IntVar(&o.seedWorkers, "seed-workers", 16, "concurrent store.Create calls while seeding")
	fs.IntVar(&o.disableKeys, "disable-keys", 200, "keys disabled in the DisableKey measurement")
	fs.StringVar(&o.postgres, "postgres", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "Postgres server (any database on it) where the bench database is created and dropped")
	fs.StringVar(&o.redis, "redis", "127.0.0.1:6379", "Redis address")
	paths := fs.String("paths", "inproc,redis,store", "paths to measure: inproc, redis, store")
	fs.BoolVar(&o.skipAllocs, "skip-allocs", false, "skip the go test -benchmem allocation benchmarks")
	fs.BoolVar(&o.skipDisable, "skip-disable", false, "skip the DisableKey measurement with three instances")
	fs.StringVar(&o.markdown, "markdown", "", "also write the report to this file")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: go run ./cmd/kwbench [flags]  (make bench BENCHFLAGS='...')\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	var err error
	if o.conc, err = loadgen.ParseInts(*conc); err != nil {
		return o, fmt.Errorf("-c: %w", err)
	}
	for _, p := range strings.Split(*paths, ",") {
		switch p = strings.TrimSpace(p); p {
		case "inproc", "redis", "store":
			o.paths = append(o.paths, p)
		case "":
		default:
			return o, fmt.Errorf("-paths: unknown path %q", p)
		}
	}
	if o.keys < 1 || o.loadKeys < 1 || o.rounds < 1 || o.retries < 0 {
		return o, errors.New("-keys, -load-keys and -rounds must be positive")
	}
	o.loadKeys = min(o.loadKeys, o.keys)
	return o, nil
}

// orchestrate is the whole run. stopSignals is called once cleanup starts
// after an interrupt, so a second Ctrl-C kills kwbench at once (its
// children still die with it: they carry Pdeathsig).
func orchestrate(ctx context.Context, stopSignals func(), args []string) (err error) {
	opt, err := parseFlags(args)
	if err != nil {
		return err
	}
	e := &env{opt: opt, redis: opt.redis}
	started := time.Now()
	rep := &report{opt: opt, started: started}

	// Cleanup, whatever happens from here on.
	defer func() {
		if ctx.Err() != nil {
			stopSignals()
			logf("interrupted: cleaning up")
		}
		stopAll()
		if e.namespace != "" {
			if n, err := dropNamespace(e.redis, e.namespace); err != nil {
				logf("remove Redis keys of namespace %s: %v", e.namespace, err)
			} else if n > 0 {
				logf("removed %d Redis keys of namespace %s", n, e.namespace)
			}
		}
		if e.db != nil {
			if derr := e.db.drop(); derr != nil {
				logf("drop database %s: %v", e.db.name, derr)
			} else {
				logf("dropped database %s", e.db.name)
			}
		}
		if e.tmp != "" {
			os.RemoveAll(e.tmp)
		}
	}()

	if e.self, err = os.Executable(); err != nil {
		return err
	}
	if e.root, err = moduleRoot(); err != nil {
		return err
	}
	if e.tmp, err = os.MkdirTemp("", "kwbench-"); err != nil {
		return err
	}
	rep.env = describeMachine(e.root)

	logf("building ./cmd/keyward")
	e.keyward = filepath.Join(e.tmp, "keyward")
	build := exec.CommandContext(ctx, "go", "build", "-o", e.keyward, "./cmd/keyward")
	build.Dir, build.Stdout, build.Stderr = e.root, os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build keyward: %w", err)
	}
	// Keyward instances sharing a Redis share its cache keys and invalidation
	// channel unless their namespaces differ; give the bench its own if the
	// binary offers the flag, so other deployments on this Redis (tests,
	// another bench) neither slow nor disturb the figures.
	if help, _ := exec.Command(e.keyward, "serve", "-h").CombinedOutput(); strings.Contains(string(help), "-redis-namespace") {
		e.namespace = "kwbench_" + e.randomSuffix()
		rep.env = append(rep.env, "Redis namespace: "+e.namespace+" (--redis-namespace)")
	} else {
		rep.env = append(rep.env, "Redis namespace: Keyward's default (no --redis-namespace flag): shared with any other Keyward on this Redis")
	}
	admin, err := keymat.Generate("live")
	if err != nil {
		return err
	}
	e.admin = admin.String()

	if e.db, err = createDB(ctx, opt.postgres); err != nil {
		return err
	}
	logf("created database %s; seeding %d keys", e.db.name, opt.keys)
	secrets, err := seed(ctx, e.db, opt.keys, opt.seedWorkers)
	if err != nil {
		return err
	}
	rand.Shuffle(len(secrets), func(i, j int) { secrets[i], secrets[j] = secrets[j], secrets[i] })
	e.keysFile = filepath.Join(e.tmp, "load-keys.txt")
	if err := os.WriteFile(e.keysFile, []byte(strings.Join(secrets[:opt.loadKeys], "\n")+"\n"), 0o600); err != nil {
		return err
	}
	secrets = nil

	for _, p := range e.paths() {
		if !contains(opt.paths, p.id) {
			continue
		}
		logf("\n== %s vs %s", p.name, p.baseline)
		pr, err := e.measurePath(ctx, p)
		if err != nil {
			return err
		}
		rep.paths = append(rep.paths, pr)
	}

	if !opt.skipDisable {
		logf("\n== DisableKey with 3 instances, %d keys", opt.disableKeys)
		if rep.disable, err = e.disableBench(ctx, 3, opt.disableKeys); err != nil {
			return err
		}
		d := rep.disable
		logf("  DisableKey p50 %s p99 %s max %s; %d violations in %d checks (%d errors) | other processes used %.2f cores",
			fmtDur(d.P50), fmtDur(d.P99), fmtDur(d.Max), d.Violations, d.Checks, d.CheckErrors, d.CPU.Other)
	}
	if !opt.skipAllocs {
		logf("\n== allocations per Validate (go test -benchmem)")
		rep.allocs = allocBenches(ctx, e.root)
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	rep.elapsed = time.Since(started)
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		rep.env = append(rep.env, "load average at end: "+strings.Join(strings.Fields(string(b))[:3], " "))
	}
	if e.db != nil {
		rep.dbName = e.db.name
	}
	md := rep.markdown()
	fmt.Print("\n" + md)
	if opt.markdown != "" {
		if err := os.WriteFile(opt.markdown, []byte(md), 0o644); err != nil {
			return err
		}
		logf("report written to %s", opt.markdown)
	}
	return nil
}

// keywardEnv is the environment of a Keyward child: kwbench's own without
// any KEYWARD_* setting (so nothing in the shell changes what is measured),
// plus the admin key.
func (e *env) keywardEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KEYWARD_") {
			out = append(out, kv)
		}
	}
	return append(out, "KEYWARD_ADMIN_KEY="+e.admin)
}

type instance struct {
	p          *proc
	grpc, http string
}

// startKeyward starts `keyward serve` on the bench database with extra flags.
func (e *env) startKeyward(ctx context.Context, name string, extra ...string) (*instance, error) {
	g, err := freeAddr()
	if err != nil {
		return nil, err
	}
	h, err := freeAddr()
	if err != nil {
		return nil, err
	}
	dataDir := filepath.Join(e.tmp, name+"-data")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	args := append([]string{"serve",
		"--postgres-dsn", e.db.dsn,
		"--grpc-addr", g, "--http-addr", h,
		"--data-dir", dataDir, "--log-level", "warn"}, extra...)
	if e.namespace != "" && contains(extra, "--redis-addr") {
		args = append(args, "--redis-namespace", e.namespace)
	}
	p, err := startProc(name, filepath.Join(e.tmp, name+".log"), nil, e.keywardEnv(), e.keyward, args...)
	if err != nil {
		return nil, err
	}
	return &instance{p: p, grpc: g, http: h}, nil
}

// server is a process answering Validate: a Keyward instance or a baseline.
type server struct {
	label string
	p     *proc
	addr  string
}

func (e *env) startBaseline(ctx context.Context, variant string) (*server, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	name := "baseline-" + variant
	p, err := startProc(name, filepath.Join(e.tmp, name+".log"), nil, os.Environ(), e.self,
		"__baseline", "-variant", variant, "-addr", addr, "-redis-addr", e.redis, "-postgres-dsn", e.db.dsn)
	if err != nil {
		return nil, err
	}
	s := &server{label: "baseline " + variant, p: p, addr: addr}
	return s, waitReady(ctx, p, addr, "", 30*time.Second)
}

// measurePath runs a path's baseline and Keyward side by side. Both are
// primed (every load key validated once), then for each round and each
// concurrency the baseline and Keyward are measured back to back, so that
// what else the machine is doing drifts as little as possible between the
// two figures that make a ratio. With several rounds each step reports the
// round with the median throughput.
func (e *env) measurePath(ctx context.Context, pa path) (pathResult, error) {
	pr := pathResult{path: pa}
	base, err := e.startBaseline(ctx, pa.baseline)
	if base != nil {
		defer base.p.stopAndReport()
	}
	if err != nil {
		return pr, err
	}
	in, err := e.startKeyward(ctx, "keyward-"+pa.id, pa.args...)
	if err != nil {
		return pr, err
	}
	defer in.p.stopAndReport()
	logf("  keyward serve ... %s", strings.Join(pa.args, " "))
	if err := waitReady(ctx, in.p, in.grpc, in.http, 60*time.Second); err != nil {
		return pr, err
	}
	kw := &server{label: pa.name, p: in.p, addr: in.grpc}
	for _, s := range []*server{base, kw} {
		if _, err := e.runLoad(ctx, s, nil, true); err != nil {
			return pr, err
		}
	}
	rounds := e.opt.rounds
	bs := make(map[int][]loadgen.Result)
	ks := make(map[int][]loadgen.Result)
	for round := range rounds {
		if rounds > 1 {
			logf("  round %d of %d", round+1, rounds)
		}
		for _, c := range e.opt.conc {
			b, k, err := e.measurePair(ctx, base, kw, c)
			if err != nil {
				return pr, err
			}
			bs[c] = append(bs[c], b)
			ks[c] = append(ks[c], k)
		}
	}
	for _, c := range e.opt.conc {
		pr.base = append(pr.base, median(bs[c]))
		pr.keyward = append(pr.keyward, median(ks[c]))
	}
	return pr, nil
}

// measurePair measures the baseline and then Keyward at concurrency c,
// each time the machine is quiet. If other processes used more than
// otherCPUWarn cores during either step anyway, the pair is measured again
// (up to -retries times) and the least disturbed pair is kept.
func (e *env) measurePair(ctx context.Context, base, kw *server, c int) (b, k loadgen.Result, err error) {
	pids := []int{base.p.cmd.Process.Pid, kw.p.cmd.Process.Pid}
	best := -1.0
	for attempt := 0; attempt <= e.opt.retries; attempt++ {
		if attempt > 0 {
			if e.extra >= e.opt.retryBudget {
				logf("  c=%d was disturbed (other processes used %.2f cores), but the -retry-budget of %v is spent", c, best, e.opt.retryBudget)
				break
			}
			logf("  c=%d was disturbed (other processes used %.2f cores): measuring the pair again (%d of %d)", c, best, attempt, e.opt.retries)
		}
		if err := e.waitQuiet(ctx, pids); err != nil {
			return b, k, err
		}
		began := time.Now()
		rb, err := e.runLoad(ctx, base, []int{c}, false)
		if err != nil {
			return b, k, err
		}
		rk, err := e.runLoad(ctx, kw, []int{c}, false)
		if err != nil {
			return b, k, err
		}
		if attempt > 0 {
			e.extra += time.Since(began)
		}
		other := max(rb[0].CPU.Other, rk[0].CPU.Other)
		if best < 0 || other < best {
			b, k, best = rb[0], rk[0], other
		}
		if best <= otherCPUWarn {
			break
		}
	}
	return b, k, nil
}

// waitQuiet waits, up to -quiet-wait, until processes other than kwbench's
// own, Postgres and Redis use at most otherCPUWarn cores over a second.
func (e *env) waitQuiet(ctx context.Context, pids []int) error {
	if e.extra >= e.opt.retryBudget {
		return nil
	}
	start := time.Now()
	defer func() { e.extra += time.Since(start) }()
	deadline := start.Add(e.opt.quietWait)
	said := false
	for {
		other := loadgen.ForeignCPU(ctx, pids, e.db.name, time.Second)
		if err := ctx.Err(); err != nil {
			return err
		}
		if other <= otherCPUWarn {
			return nil
		}
		if time.Now().After(deadline) {
			logf("  the machine is still busy (other processes use %.2f cores); measuring anyway", other)
			return nil
		}
		if !said {
			logf("  waiting up to %v for other processes to quiet down (they use %.2f cores)", e.opt.quietWait, other)
			said = true
		}
	}
}

// median is the result with the median throughput (the lower middle one
// for an even count).
func median(rs []loadgen.Result) loadgen.Result {
	s := append([]loadgen.Result(nil), rs...)
	sort.Slice(s, func(i, j int) bool { return s[i].RPS < s[j].RPS })
	return s[(len(s)-1)/2]
}

// runLoad runs the load generator in its own process against s, one step
// per concurrency in conc; with prime it first validates every load key
// once (and conc may be empty).
func (e *env) runLoad(ctx context.Context, s *server, conc []int, prime bool) ([]loadgen.Result, error) {
	label := s.label
	var results []loadgen.Result
	var bad []string
	out := &lineWriter{fn: func(line string) {
		var r loadgen.Result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			bad = append(bad, line)
			return
		}
		results = append(results, r)
		logf("  %-20s c=%-3d %7.0f req/s  p50 %-8s p99 %-8s errors %d, checked %d | CPU cores: server %.2f load %.2f pg+redis %.2f other %.2f steal %.2f",
			label, r.Concurrency, r.RPS, fmtDur(r.P50), fmtDur(r.P99), r.Errors, r.Sampled,
			r.CPU.Server, r.CPU.Load, r.CPU.Services, r.CPU.Other, r.CPU.Steal)
	}}
	o := e.opt
	args := []string{"__load", "-addr", s.addr, "-keys", e.keysFile, "-c", joinInts(conc),
		"-d", o.duration.String(), "-warmup", o.warmup.String(), "-conns", strconv.Itoa(o.conns),
		"-server-pid", strconv.Itoa(s.p.cmd.Process.Pid), "-db-name", e.db.name}
	if !prime {
		args = append(args, "-no-prime")
	}
	p, err := startProc("load generator", "", out, os.Environ(), e.self, args...)
	if err != nil {
		return nil, err
	}
	limit := 2*time.Minute + time.Duration(len(conc))*(o.duration+o.warmup+10*time.Second)
	select {
	case <-p.done:
	case <-ctx.Done():
		p.stop(2 * time.Second)
		return nil, ctx.Err()
	case <-time.After(limit):
		p.stop(2 * time.Second)
		return nil, fmt.Errorf("load generator against %s did not finish within %v", label, limit)
	}
	if p.err != nil {
		return nil, fmt.Errorf("load generator against %s failed: %v", label, p.err)
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("load generator against %s printed %q", label, bad)
	}
	if len(results) != len(conc) {
		return nil, fmt.Errorf("load generator against %s: %d results for %d steps", label, len(results), len(conc))
	}
	for _, r := range results {
		if r.Invalid > 0 {
			return nil, fmt.Errorf("%s at c=%d: %d of %d sampled answers were not valid=true (first: %s); a benchmark of refusals would be meaningless",
				label, r.Concurrency, r.Invalid, r.Sampled, r.FirstInvalid)
		}
		if r.Sampled == 0 {
			return nil, fmt.Errorf("%s at c=%d: no answer was sampled and checked", label, r.Concurrency)
		}
		if r.Errors > 0 {
			logf("  WARNING: %s at c=%d: %d errors (first: %s)", label, r.Concurrency, r.Errors, r.FirstError)
		}
		if r.CPU.Other > otherCPUWarn {
			logf("  WARNING: other processes used %.2f cores during this step: its figures are disturbed", r.CPU.Other)
		}
	}
	return results, nil
}

// otherCPUWarn is how much CPU foreign processes may use during a step
// before kwbench calls the step disturbed.
const otherCPUWarn = 0.10

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("run kwbench inside the keyward module (go run ./cmd/kwbench)")
	}
	return filepath.Dir(gomod), nil
}

// describeMachine notes what the figures depend on.
func describeMachine(root string) []string {
	var out []string
	rev, _ := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output()
	dirty, _ := exec.Command("git", "-C", root, "status", "--porcelain").Output()
	r := strings.TrimSpace(string(rev))
	if len(bytes.TrimSpace(dirty)) > 0 {
		r += " + uncommitted changes"
	}
	out = append(out, "commit: "+r)
	out = append(out, fmt.Sprintf("go: %s, %s/%s, %d CPUs (GOMAXPROCS %d)", runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0)))
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				out = append(out, "cpu: "+strings.TrimSpace(strings.SplitN(l, ":", 2)[1]))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		out = append(out, "load average at start: "+strings.Join(strings.Fields(string(b))[:3], " "))
	}
	return out
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

// dropNamespace deletes the Redis keys Keyward wrote under this run's own
// namespace (Keyward wraps it in a hash tag: "{ns}:…"). Nothing else
// matches: the namespace is random.
func dropNamespace(addr, ns string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	n := 0
	iter := rdb.Scan(ctx, 0, "{"+ns+"}:*", 1000).Iterator()
	var batch []string
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := rdb.Unlink(ctx, batch...).Err()
		n += len(batch)
		batch = batch[:0]
		return err
	}
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 1000 {
			if err := flush(); err != nil {
				return n, err
			}
		}
	}
	if err := iter.Err(); err != nil {
		return n, err
	}
	return n, flush()
}
