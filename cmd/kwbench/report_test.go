package main

import (
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/cmd/kwbench/internal/loadgen"
)

func res(c int, rps float64, p99 time.Duration, other float64) loadgen.Result {
	return loadgen.Result{Concurrency: c, RPS: rps, P50: p99 / 3, P99: p99, Sampled: 1, CPU: loadgen.CPU{Other: other}}
}

func TestReportVerdicts(t *testing.T) {
	e := &env{redis: "r"}
	ps := e.paths()
	r := &report{
		opt: options{rounds: 1, retries: 2, quietWait: time.Second, retryBudget: time.Minute, keys: 10, loadKeys: 5, conns: 4},
		paths: []pathResult{
			{path: ps[0], base: []loadgen.Result{res(16, 1000, 2*time.Millisecond, 0), res(64, 1000, 5*time.Millisecond, 0)},
				keyward: []loadgen.Result{res(16, 900, 4*time.Millisecond, 0), res(64, 900, 5*time.Millisecond, 0)}},
			{path: ps[1], base: []loadgen.Result{res(64, 1000, time.Millisecond, 0)},
				keyward: []loadgen.Result{res(64, 800, time.Millisecond, 0.5)}},
		},
		disable: &disableResult{Instances: 3, Keys: 10, P50: time.Millisecond, P99: 12 * time.Millisecond, Checks: 20},
		allocs: []allocBench{{Pkg: "./internal/cache/", Pattern: ".",
			Lines: []string{"BenchmarkValidateLocalHit-2 1000000 120 ns/op 48 B/op 2 allocs/op"}}},
	}
	md := r.markdown()
	for _, want := range []string{
		"| in-process hit ≥ 85% of noop throughput at c=64 | 90% (900 vs 1,000 req/s) | PASS |",
		"| in-process hit p99 at c=16 ≤ 1.5× noop p99 | 2.00× (4.00 ms vs 2.00 ms) | MISS |",
		"| Redis hit ≥ 85% of redis-get throughput at c=64 ⚠ | 80% (800 vs 1,000 req/s) | MISS |",
		"2 allocs/op (`BenchmarkValidateLocalHit-2",
		"| DisableKey p99 ≤ 10 ms with 3 instances | p99 12.0 ms",
		"0 valid=true in 20 Validates on the other instances right after DisableKey returned | PASS |",
		"**1 of 6 steps were disturbed**",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

func TestFormatting(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 35915.4: "35,915", 1234567: "1,234,567"} {
		if got := fmtRPS(in); got != want {
			t.Errorf("fmtRPS(%v) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[time.Duration]string{153 * time.Microsecond: "153 µs", 2190 * time.Microsecond: "2.19 ms", 22700 * time.Microsecond: "22.7 ms"} {
		if got := fmtDur(in); got != want {
			t.Errorf("fmtDur(%v) = %q, want %q", in, got, want)
		}
	}
}

func TestPolicyCosts(t *testing.T) {
	a := allocBench{Lines: []string{
		"BenchmarkPolicies/none-2 1000 1000 ns/op 176 B/op 2 allocs/op",
		"BenchmarkPolicies/scopes-2 1000 1100 ns/op 176 B/op 2 allocs/op",
		"BenchmarkPolicies/quota_sqlite-2 10 400000 ns/op",
		"BenchmarkPolicies/none-2 1000 1200 ns/op",
		"BenchmarkPolicies/scopes-2 1000 1250 ns/op",
		"BenchmarkPolicies/none-2 1000 900 ns/op",
		"BenchmarkPolicies/scopes-2 1000 1000 ns/op",
	}}
	rows := policyCosts([]allocBench{a})
	if len(rows) != 3 || rows[0].name != "none" || rows[0].ratio != 1 {
		t.Fatalf("rows = %+v", rows)
	}
	if s := rows[1]; s.name != "scopes" || s.ns != 1100 || s.ratio != 1000.0/1100 || !s.held {
		t.Errorf("scopes row = %+v, want median 1100 ns and ratio 1000/1100, held to the target", s)
	}
	if q := rows[2]; q.held {
		t.Errorf("quota row %+v is held to the in-process target", q)
	}
}
