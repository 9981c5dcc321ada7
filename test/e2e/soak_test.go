package e2e

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/keymat"
	"github.com/keyward/keyward/internal/testenv"
)

// TestSoak runs two `keyward serve` processes (the built binary) over one
// Postgres database and a private redis-server for KEYWARD_SOAK (a
// duration; unset: skipped; make soak: 10m), with Validate and Envoy Check
// at a steady rate (KEYWARD_SOAK_RATE per second, default 400) on a few
// hundred keys — active, disabled, deleted, never issued — and management
// churn (KEYWARD_SOAK_WRITES per second, default 5: CreateKey, UpdateKey,
// DisableKey, EnableKey, RegenerateKey, DeleteKey). Every
// KEYWARD_SOAK_INTERVAL (default: a twentieth of the run, at least 5 s) it
// samples each instance's /metrics — heap in use, resident memory,
// goroutines, open file descriptors, Postgres and Redis pool connections —
// and the client-side latency, prints them as a table over time, and
// asserts they stay flat: the last quarter's average heap within 25% (or
// 4 MiB) of the second quarter's, goroutines within 10% (or 10), open
// descriptors and pool connections not above the second quarter's highest
// (plus a margin of 5 and 2), and p99 latency within 3× (or +5 ms). Every
// call is also judged by the revocation history checker: zero wrong answers.
func TestSoak(t *testing.T) {
	total := envDuration(t, "KEYWARD_SOAK", 0)
	if total == 0 {
		t.Skip("KEYWARD_SOAK is not set (make soak runs it for 10m)")
	}
	rate := envInt(t, "KEYWARD_SOAK_RATE", 400)
	writes := envInt(t, "KEYWARD_SOAK_WRITES", 5)
	interval := envDuration(t, "KEYWARD_SOAK_INTERVAL", max(total/20, 5*time.Second))
	if total < 8*interval {
		t.Fatalf("KEYWARD_SOAK=%v is too short for samples every %v: want at least 8 samples", total, interval)
	}

	dsn := testenv.Postgres(t)
	r := startRedis(t)
	c := startCluster(t, 2, dsn, r)
	h := newHistory()
	tgs := histTargets(t, c)
	names := []string{c.insts[0].name, c.insts[1].name}

	// Keys: 200 active, 20 disabled, 20 deleted, 20 never issued.
	var fixed []*hsecret
	for i := range 240 {
		in := c.insts[i%2]
		sent := h.now()
		id, secret := c.createKey(t, in, fmt.Sprintf("soak-%d", i))
		s := h.secret(id, secret, sent, h.now(), in.name)
		switch {
		case i >= 220:
			if _, _, err := h.write(in.name, func() error { _, err := c.mgmt(in, deleteKey(id)); return err }, map[*hsecret]histOp{s: histDelete}); err != nil {
				t.Fatal(err)
			}
		case i >= 200:
			if _, _, err := h.write(in.name, func() error { _, err := c.mgmt(in, disable(id)); return err }, map[*hsecret]histOp{s: histDisable}); err != nil {
				t.Fatal(err)
			}
		}
		fixed = append(fixed, s)
	}
	for range 20 {
		u, err := keymat.Generate("live")
		if err != nil {
			t.Fatal(err)
		}
		fixed = append(fixed, h.neverIssued(u.String()))
	}
	// Churn keys, replaced as they are deleted; only the churn goroutine
	// writes the slots.
	slots := make([]hslot, 32)
	for i := range slots {
		in := c.insts[i%2]
		sent := h.now()
		id, secret := c.createKey(t, in, fmt.Sprintf("soak-churn-%d", i))
		slots[i].cur.Store(h.secret(id, secret, sent, h.now(), in.name))
	}

	// Client-side latency and errors per sample interval.
	type window struct {
		lat    durations
		calls  atomic.Int64
		errors atomic.Int64
		writes atomic.Int64
		wfail  atomic.Int64
	}
	var cur atomic.Pointer[window]
	cur.Store(&window{})

	stop := make(chan struct{})
	var wg sync.WaitGroup
	tokens := make(chan struct{}, rate)
	wg.Add(1)
	go func() { // the steady rate: one token per call, by the clock (a late tick catches up)
		defer wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		began, issued := time.Now(), 0
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			for due := int(time.Since(began).Seconds() * float64(rate)); issued < due; issued++ {
				select {
				case tokens <- struct{}{}:
				default: // a second's backlog already: the clients cannot keep up
				}
			}
		}
	}()
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := h.recorder()
			rng := rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))
			for {
				select {
				case <-stop:
					return
				case <-tokens:
				}
				var s *hsecret
				if rng.IntN(5) == 0 {
					sl := &slots[rng.IntN(len(slots))]
					s = sl.cur.Load()
					if p := sl.prev.Load(); p != nil && rng.IntN(2) == 0 {
						s = p
					}
				} else {
					s = fixed[rng.IntN(len(fixed))]
				}
				w := cur.Load()
				out, took := rec.call(tgs[i%len(tgs)], histMethod(i/len(tgs)%2), s, rpcTimeout)
				w.lat.add(took)
				w.calls.Add(1)
				if out == failed {
					w.errors.Add(1)
				}
			}
		}()
	}
	var churnErrs []string
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(99, uint64(time.Now().UnixNano())))
		disabled := make([]bool, len(slots))
		tick := time.NewTicker(time.Second / time.Duration(writes))
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			i := rng.IntN(len(slots))
			sl := &slots[i]
			s := sl.cur.Load()
			wi := rng.IntN(2)
			in := c.insts[wi]
			var err error
			var newSecret, newID string
			op := rng.IntN(5)
			if disabled[i] {
				op = -1
			}
			w := cur.Load()
			switch op {
			case -1:
				_, _, err = h.write(in.name, func() error { _, err := c.mgmt(in, enable(s.keyID)); return err }, map[*hsecret]histOp{s: histEnable})
				disabled[i] = err != nil
			case 0:
				_, _, err = h.write(in.name, func() error { _, err := c.mgmt(in, disable(s.keyID)); return err }, map[*hsecret]histOp{s: histDisable})
				disabled[i] = err == nil
			case 1:
				var sent, returned int64
				sent, returned, err = h.write(in.name, func() error { _, err := c.mgmt(in, regenerate(s.keyID, &newSecret)); return err },
					map[*hsecret]histOp{s: histRegenerate})
				if err == nil {
					sl.prev.Store(s)
					sl.cur.Store(h.secret(s.keyID, newSecret, sent, returned, in.name))
				}
			case 2:
				if _, _, err = h.write(in.name, func() error { _, err := c.mgmt(in, deleteKey(s.keyID)); return err },
					map[*hsecret]histOp{s: histDelete}); err == nil {
					var sent, returned int64
					sent, returned, err = h.write(in.name, func() error {
						ctx, cancel := rpcCtx()
						defer cancel()
						resp, err := in.kc.CreateKey(c.admin(ctx), &keywardv1.CreateKeyRequest{Key: &keywardv1.Key{DisplayName: fmt.Sprintf("soak-churn-%d-%d", i, n)}})
						newID, newSecret = resp.GetKey().GetKeyId(), resp.GetSecret()
						return err
					}, nil)
					if err == nil {
						sl.prev.Store(s)
						sl.cur.Store(h.secret(newID, newSecret, sent, returned, in.name))
					}
				}
			default:
				_, err = c.mgmt(in, func(ctx context.Context, kc keywardv1.KeyServiceClient) error {
					_, err := kc.UpdateKey(ctx, &keywardv1.UpdateKeyRequest{Key: &keywardv1.Key{KeyId: s.keyID, Description: fmt.Sprintf("soak %d", n)},
						UpdateMask: fieldMask("description")})
					return err
				})
			}
			w.writes.Add(1)
			if err != nil {
				w.wfail.Add(1)
				if len(churnErrs) < 10 {
					churnErrs = append(churnErrs, fmt.Sprintf("%s: %v", in.name, status.Code(err)))
				}
			}
		}
	}()
	halt := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer halt()

	// Samples.
	type sample struct {
		at                       time.Duration
		calls, errors, wr, wfail int64
		p50, p99                 time.Duration
		per                      [2]soakMetrics
	}
	var samples []sample
	start := time.Now()
	t.Logf("soak: %v, %d calls/s (Validate and Check) and %d writes/s over 2 instances, sampled every %v", total, rate, writes, interval)
	header := fmt.Sprintf("%8s %7s %6s %6s %9s %9s | %-52s | %-52s", "at", "calls/s", "errors", "writes",
		"p50", "p99", names[0]+": heap MiB, rss MiB, goroutines, fds, pg, redis", names[1]+": same")
	t.Log(header)
	for at := interval; at <= total; at += interval {
		time.Sleep(time.Until(start.Add(at)))
		w := cur.Swap(&window{})
		s := sample{at: at, calls: w.calls.Load(), errors: w.errors.Load(), wr: w.writes.Load(), wfail: w.wfail.Load(),
			p50: w.lat.pct(50), p99: w.lat.pct(99)}
		for i, in := range c.insts {
			m, err := scrapeSoak(in)
			if err != nil {
				t.Fatalf("scrape %s: %v", in.name, err)
			}
			s.per[i] = m
		}
		samples = append(samples, s)
		var per []string
		for _, m := range s.per {
			per = append(per, fmt.Sprintf("%6.1f %6.1f %5.0f %5.0f %3.0f %3.0f", m.heap/(1<<20), m.rss/(1<<20), m.goroutines, m.fds, m.pg, m.redis))
		}
		t.Logf("%8v %7.0f %6d %6d %9v %9v | %-52s | %-52s", at, float64(s.calls)/interval.Seconds(), s.errors, s.wr,
			round(s.p50), round(s.p99), per[0], per[1])
	}
	halt()

	// Flatness: the last quarter against the second (the first is warm-up).
	n := len(samples)
	q2, q4 := samples[n/4:n/2], samples[n-n/4:]
	avg := func(ss []sample, f func(sample) float64) float64 {
		var sum float64
		for _, s := range ss {
			sum += f(s)
		}
		return sum / float64(len(ss))
	}
	top := func(ss []sample, f func(sample) float64) float64 {
		m := math.Inf(-1)
		for _, s := range ss {
			m = max(m, f(s))
		}
		return m
	}
	for i := range c.insts {
		name := names[i]
		check := func(what string, early, late, limit float64) {
			t.Logf("%s %-22s second quarter %10.1f, last quarter %10.1f (limit %.1f)", name, what, early, late, limit)
			if late > limit {
				t.Errorf("%s: %s grew: last quarter %.1f > %.1f (second quarter %.1f)", name, what, late, limit, early)
			}
		}
		heap := func(s sample) float64 { return s.per[i].heap / (1 << 20) }
		e, l := avg(q2, heap), avg(q4, heap)
		check("heap in use (MiB, avg)", e, l, max(e*1.25, e+4))
		g := func(s sample) float64 { return s.per[i].goroutines }
		e, l = avg(q2, g), avg(q4, g)
		check("goroutines (avg)", e, l, max(e*1.1, e+10))
		fd := func(s sample) float64 { return s.per[i].fds }
		check("open fds (max)", top(q2, fd), top(q4, fd), top(q2, fd)+5)
		pg := func(s sample) float64 { return s.per[i].pg }
		check("postgres conns (max)", top(q2, pg), top(q4, pg), top(q2, pg)+2)
		rc := func(s sample) float64 { return s.per[i].redis }
		check("redis conns (max)", top(q2, rc), top(q4, rc), top(q2, rc)+2)
	}
	p99 := func(s sample) float64 { return float64(s.p99) / float64(time.Millisecond) }
	e, l := avg(q2, p99), avg(q4, p99)
	t.Logf("client p99 (ms, avg)    second quarter %10.2f, last quarter %10.2f (limit %.2f)", e, l, max(3*e, e+5))
	if l > max(3*e, e+5) {
		t.Errorf("client p99 latency grew: %.2f ms in the last quarter, %.2f ms in the second", l, e)
	}

	v := h.judge(names)
	var calls, errs, wr, wfail int64
	for _, s := range samples {
		calls, errs, wr, wfail = calls+s.calls, errs+s.errors, wr+s.wr, wfail+s.wfail
	}
	t.Logf("soak: %d calls (%.0f/s), %d errors; %d writes, %d failed; history: %s", calls, float64(calls)/total.Seconds(), errs, wr, wfail, v)
	if n := v.violations + v.staleRefusals + v.wrongReasons; n > 0 {
		t.Errorf("%d wrong answers; first: %s", n, strings.Join(v.samples, "; "))
	}
	if v.errorCount() > 0 {
		t.Errorf("%d Validate/Check errors; first: %s", v.errorCount(), strings.Join(v.errorSamples, "; "))
	}
	if wfail > 0 {
		t.Errorf("%d writes failed; first: %s", wfail, strings.Join(churnErrs, "; "))
	}
	if got, want := float64(calls)/total.Seconds(), 0.9*float64(rate); got < want {
		t.Errorf("the load ran at %.0f calls/s, under 90%% of the %d asked: the figures do not describe that rate", got, rate)
	}
}

// soakMetrics are one instance's figures at one moment.
type soakMetrics struct {
	heap, rss, goroutines, fds, pg, redis float64
}

func scrapeSoak(in *instance) (soakMetrics, error) {
	resp, err := quickHTTP.Get(in.BaseURL + "/metrics")
	if err != nil {
		return soakMetrics{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return soakMetrics{}, err
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		return soakMetrics{}, err
	}
	get := func(name string) float64 {
		mf := fams[name]
		if mf == nil {
			return math.NaN()
		}
		var sum float64
		for _, m := range mf.GetMetric() {
			sum += metricValue(m)
		}
		return sum
	}
	return soakMetrics{
		heap: get("go_memstats_heap_inuse_bytes"), rss: get("process_resident_memory_bytes"),
		goroutines: get("go_goroutines"), fds: get("process_open_fds"),
		pg: get("keyward_postgres_pool_connections"), redis: get("keyward_redis_pool_connections"),
	}, nil
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetUntyped() != nil:
		return m.GetUntyped().GetValue()
	}
	return 0
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		t.Fatalf("%s=%q: want a duration such as 10m", name, v)
	}
	return d
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

func fieldMask(paths ...string) *fieldmaskpb.FieldMask { return &fieldmaskpb.FieldMask{Paths: paths} }
