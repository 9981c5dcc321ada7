// Package loadgen is kwbench's lean gRPC load generator. It runs in its own
// process (kwbench re-executes itself in this mode) so that its work is
// scheduled like any other client's and never shares a Go runtime with the
// server under test.
//
// Each request is grpc.ClientConn.Invoke of KeyService/Validate with a
// pre-encoded ValidateRequest, over a few connections, from closed-loop
// workers; latencies go into a per-worker log-linear histogram. Before the
// first step every request is sent once and every answer must be valid=true,
// which also fills whatever caches the server has; during measurement a
// sample of answers is decoded and checked again.
package loadgen

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/keyward/keyward/cmd/kwbench/internal/hist"
	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
)

// Method is the one RPC the generator calls.
const Method = keywardv1.KeyService_Validate_FullMethodName

// Config is one load run against one server: a step per concurrency.
type Config struct {
	Addr         string
	Requests     [][]byte // pre-encoded ValidateRequest messages
	Concurrency  []int
	Duration     time.Duration // measured time per step
	Warmup       time.Duration // unmeasured load before each step
	Conns        int
	SampleEvery  int  // decode and check one answer in this many
	SkipPriming  bool // skip the every-key-once pass
	PrimeWorkers int
	// ServerPID and DBName let each step account for where the CPU went.
	ServerPID int
	DBName    string
}

// Result is one step's measurement.
type Result struct {
	Concurrency  int           `json:"concurrency"`
	Seconds      float64       `json:"seconds"`
	Requests     uint64        `json:"requests"`
	RPS          float64       `json:"rps"`
	Errors       uint64        `json:"errors"`
	FirstError   string        `json:"first_error,omitempty"`
	Sampled      uint64        `json:"sampled"`
	Invalid      uint64        `json:"invalid"`
	FirstInvalid string        `json:"first_invalid,omitempty"`
	Mean         time.Duration `json:"mean_ns"`
	P50          time.Duration `json:"p50_ns"`
	P90          time.Duration `json:"p90_ns"`
	P99          time.Duration `json:"p99_ns"`
	P999         time.Duration `json:"p999_ns"`
	Max          time.Duration `json:"max_ns"`
	CPU          CPU           `json:"cpu"`
}

// Main is the entry point of the hidden load mode: flags in, one JSON Result
// per line on out.
func Main(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("kwbench load", flag.ContinueOnError)
	addr := fs.String("addr", "", "gRPC address of the server under test")
	keysFile := fs.String("keys", "", "file with one secret per line")
	conc := fs.String("c", "1,16,64", "comma-separated concurrency steps; empty: only prime")
	d := fs.Duration("d", 5*time.Second, "measured time per step")
	warm := fs.Duration("warmup", time.Second, "unmeasured load before each step")
	conns := fs.Int("conns", 4, "gRPC connections")
	sample := fs.Int("sample", 64, "decode and check one answer in this many")
	noPrime := fs.Bool("no-prime", false, "skip sending every key once before the first step")
	serverPID := fs.Int("server-pid", 0, "pid of the server, for CPU accounting")
	dbName := fs.String("db-name", "", "the bench database, for CPU accounting")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var steps []int
	if *conc != "" {
		var err error
		if steps, err = ParseInts(*conc); err != nil {
			return fmt.Errorf("-c: %w", err)
		}
	}
	reqs, err := readRequests(*keysFile)
	if err != nil {
		return err
	}
	cfg := Config{Addr: *addr, Requests: reqs, Concurrency: steps, Duration: *d, Warmup: *warm,
		Conns: *conns, SampleEvery: *sample, SkipPriming: *noPrime, ServerPID: *serverPID, DBName: *dbName}
	enc := json.NewEncoder(out)
	return Run(ctx, cfg, func(r Result) error { return enc.Encode(r) })
}

// ParseInts reads "1,16,64".
func ParseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q: want a positive integer", f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("empty list")
	}
	return out, nil
}

func readRequests(path string) ([][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read keys: %w", err)
	}
	defer f.Close()
	var reqs [][]byte
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		s := strings.TrimSpace(sc.Text())
		if s == "" {
			continue
		}
		b, err := proto.Marshal(&keywardv1.ValidateRequest{Key: s})
		if err != nil {
			return nil, err
		}
		reqs = append(reqs, b)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read keys: %w", err)
	}
	if len(reqs) == 0 {
		return nil, fmt.Errorf("read keys: %s holds no keys", path)
	}
	return reqs, nil
}

// Run dials, primes, and measures each concurrency step, handing each
// Result to emit as soon as it is known.
func Run(ctx context.Context, cfg Config, emit func(Result) error) error {
	if cfg.Conns < 1 {
		cfg.Conns = 1
	}
	if cfg.SampleEvery < 1 {
		cfg.SampleEvery = 1
	}
	if cfg.PrimeWorkers < 1 {
		cfg.PrimeWorkers = 64
	}
	conns := make([]*grpc.ClientConn, cfg.Conns)
	for i := range conns {
		cc, err := grpc.NewClient(cfg.Addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{}), grpc.CallContentSubtype("proto")))
		if err != nil {
			return fmt.Errorf("dial %s: %w", cfg.Addr, err)
		}
		defer cc.Close()
		cc.Connect()
		conns[i] = cc
	}
	if !cfg.SkipPriming {
		if err := prime(ctx, conns, cfg); err != nil {
			return err
		}
	}
	for _, c := range cfg.Concurrency {
		if err := ctx.Err(); err != nil {
			return err
		}
		r := step(ctx, conns, cfg, c)
		if err := emit(r); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// check decodes a ValidateResponse and says why it is not valid=true ("" if it is).
func check(b []byte) string {
	var resp keywardv1.ValidateResponse
	if err := proto.Unmarshal(b, &resp); err != nil {
		return "undecodable response: " + err.Error()
	}
	if !resp.GetValid() {
		return "valid=false, reason " + resp.GetReason().String()
	}
	return ""
}

// prime sends every request once and requires every answer to be valid=true.
func prime(ctx context.Context, conns []*grpc.ClientConn, cfg Config) error {
	var next atomic.Int64
	var mu sync.Mutex
	var errs, invalid int
	var firstErr, firstInvalid string
	var wg sync.WaitGroup
	for w := range min(cfg.PrimeWorkers, len(cfg.Requests)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cc := conns[w%len(conns)]
			req := &rawMsg{}
			resp := &rawMsg{keep: true}
			for {
				i := int(next.Add(1) - 1)
				if i >= len(cfg.Requests) || ctx.Err() != nil {
					return
				}
				req.b = cfg.Requests[i]
				callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
				err := cc.Invoke(callCtx, Method, req, resp)
				cancel()
				var bad string
				if err == nil {
					bad = check(resp.b)
				}
				if err != nil || bad != "" {
					mu.Lock()
					if err != nil {
						if errs == 0 {
							firstErr = err.Error()
						}
						errs++
					} else {
						if invalid == 0 {
							firstInvalid = bad
						}
						invalid++
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	if errs > 0 || invalid > 0 {
		return fmt.Errorf("priming %s: of %d keys, %d calls failed (first: %s) and %d answered not valid (first: %s); a benchmark of refusals would be meaningless",
			cfg.Addr, len(cfg.Requests), errs, firstErr, invalid, firstInvalid)
	}
	return nil
}

const (
	phaseWarmup int32 = iota
	phaseMeasure
	phaseStop
)

type worker struct {
	h            hist.Histogram
	errors       uint64
	firstError   string
	sampled      uint64
	invalid      uint64
	firstInvalid string
}

// step runs c closed-loop workers: Warmup unmeasured, then Duration measured.
// A request counts if it started and finished inside the measured window.
func step(ctx context.Context, conns []*grpc.ClientConn, cfg Config, c int) Result {
	var phase atomic.Int32
	workers := make([]*worker, c)
	var wg sync.WaitGroup
	for w := range c {
		wk := &worker{}
		workers[w] = wk
		wg.Add(1)
		go func() {
			defer wg.Done()
			cc := conns[w%len(conns)]
			reqs := cfg.Requests
			i := rand.IntN(len(reqs))
			req := &rawMsg{}
			resp := &rawMsg{b: make([]byte, 0, 1024)}
			var n int
			for {
				ph := phase.Load()
				if ph == phaseStop {
					return
				}
				req.b = reqs[i]
				if i++; i == len(reqs) {
					i = 0
				}
				n++
				resp.keep = ph == phaseMeasure && n%cfg.SampleEvery == 0
				t0 := time.Now()
				err := cc.Invoke(ctx, Method, req, resp)
				lat := time.Since(t0)
				if ph != phaseMeasure || phase.Load() != phaseMeasure {
					continue
				}
				if err != nil {
					if wk.errors == 0 {
						wk.firstError = err.Error()
					}
					wk.errors++
					continue
				}
				wk.h.Record(lat)
				if resp.keep {
					wk.sampled++
					if bad := check(resp.b); bad != "" {
						if wk.invalid == 0 {
							wk.firstInvalid = bad
						}
						wk.invalid++
					}
				}
			}
		}()
	}
	probe := cpuProbe{serverPIDs: []int{cfg.ServerPID}, dbName: cfg.DBName}
	sleep(ctx, cfg.Warmup)
	cpu0 := probe.snap()
	phase.Store(phaseMeasure)
	start := time.Now()
	sleep(ctx, cfg.Duration)
	phase.Store(phaseStop)
	elapsed := time.Since(start)
	cpu1 := probe.snap()
	wg.Wait()

	var h hist.Histogram
	r := Result{Concurrency: c, Seconds: elapsed.Seconds(), CPU: cpuBetween(cpu0, cpu1, elapsed.Seconds())}
	for _, wk := range workers {
		h.Merge(&wk.h)
		r.Errors += wk.errors
		if r.FirstError == "" {
			r.FirstError = wk.firstError
		}
		r.Sampled += wk.sampled
		r.Invalid += wk.invalid
		if r.FirstInvalid == "" {
			r.FirstInvalid = wk.firstInvalid
		}
	}
	r.Requests = h.Count()
	r.RPS = float64(r.Requests) / elapsed.Seconds()
	r.Mean, r.P50, r.P90, r.P99, r.P999, r.Max = h.Mean(), h.Quantile(0.50), h.Quantile(0.90), h.Quantile(0.99), h.Quantile(0.999), h.Max()
	return r
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
