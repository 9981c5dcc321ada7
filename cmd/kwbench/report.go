package main

import (
	"fmt"
	"runtime"
	"strings"
	"time"

	"github.com/keyward/keyward/cmd/kwbench/internal/loadgen"
)

type pathResult struct {
	path    path
	base    []loadgen.Result
	keyward []loadgen.Result
}

type report struct {
	opt     options
	started time.Time
	elapsed time.Duration
	env     []string
	dbName  string
	paths   []pathResult
	disable *disableResult
	allocs  []allocBench
}

func at(rs []loadgen.Result, c int) (loadgen.Result, bool) {
	for _, r := range rs {
		if r.Concurrency == c {
			return r, true
		}
	}
	return loadgen.Result{}, false
}

func (r *report) path(id string) (pathResult, bool) {
	for _, p := range r.paths {
		if p.path.id == id {
			return p, true
		}
	}
	return pathResult{}, false
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

func (r *report) markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	cmd := "go run ./cmd/kwbench"
	if len(r.opt.args) > 0 {
		cmd += " " + strings.Join(r.opt.args, " ")
	}
	w("## kwbench run of %s", r.started.UTC().Format("2006-01-02 15:04 MST"))
	w("")
	w("Command: `%s` (%s in all)", cmd, r.elapsed.Round(time.Second))
	w("")
	for _, l := range r.env {
		w("- %s", l)
	}
	w("- %d keys seeded; the load cycles through %d of them (pre-encoded ValidateRequests), %d gRPC connections, closed-loop workers", r.opt.keys, r.opt.loadKeys, r.opt.conns)
	w("- each step: %v unmeasured warm-up, then %v measured; every key was validated once (and answered valid=true) before the first step, and 1 in 64 answers is decoded and checked during measurement", r.opt.warmup, r.opt.duration)
	if r.opt.rounds > 1 {
		w("- %d rounds of every step, baseline and Keyward back to back; each figure is from the round with the median throughput", r.opt.rounds)
	} else {
		w("- baseline and Keyward measured back to back at each concurrency (one round)")
	}
	w("- before each pair kwbench waits up to %v for processes other than its own, Postgres and Redis to stop using the CPU, and measures a pair again (up to %d times) if they used more than %.2f cores during it, keeping the least disturbed (all this within a budget of %v per run)", r.opt.quietWait, r.opt.retries, otherCPUWarn, r.opt.retryBudget)
	var disturbed, steps int
	for _, p := range r.paths {
		for _, x := range append(append([]loadgen.Result(nil), p.base...), p.keyward...) {
			steps++
			if x.CPU.Other > otherCPUWarn {
				disturbed++
			}
		}
	}
	if disturbed > 0 {
		w("- **%d of %d steps were disturbed**: processes other than the servers, the load generator, Postgres and Redis used more than %.2f cores during them (see the CPU table); rerun on a quiet machine before trusting their ratios", disturbed, steps, otherCPUWarn)
	} else if steps > 0 {
		w("- no step was disturbed by other processes (each below %.2f cores; see the CPU table)", otherCPUWarn)
	}
	w("")

	w("### Validate over gRPC: Keyward beside its baseline")
	w("")
	w("| path | c | req/s | p50 | p99 | baseline | req/s | p50 | p99 | req/s ratio | p99 ratio |")
	w("| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
	for _, p := range r.paths {
		for _, k := range p.keyward {
			bl, ok := at(p.base, k.Concurrency)
			if !ok {
				continue
			}
			w("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |",
				p.path.name, k.Concurrency, fmtRPS(k.RPS), fmtDur(k.P50), fmtDur(k.P99)+errNote(k),
				p.path.baseline, fmtRPS(bl.RPS), fmtDur(bl.P50), fmtDur(bl.P99)+errNote(bl),
				pct(k.RPS, bl.RPS)+mark(k, bl), times(k.P99, bl.P99))
		}
	}
	if disturbed > 0 {
		w("")
		w("⚠ disturbed: other processes used more than %.2f cores during the Keyward or the baseline step.", otherCPUWarn)
	}
	w("")

	w("### Targets (issue 3)")
	w("")
	w("| target | measured | |")
	w("| --- | --- | --- |")
	tp := func(id string, c int, min float64, what string) {
		what += markAt(r, id, c)
		p, ok := r.path(id)
		if !ok {
			return
		}
		k, ok1 := at(p.keyward, c)
		bl, ok2 := at(p.base, c)
		if !ok1 || !ok2 {
			w("| %s | c=%d not measured | n/a |", what, c)
			return
		}
		w("| %s | %s (%s vs %s req/s) | %s |", what, pct(k.RPS, bl.RPS), fmtRPS(k.RPS), fmtRPS(bl.RPS), verdict(k.RPS >= min*bl.RPS))
	}
	tp("inproc", 64, 0.85, "in-process hit ≥ 85% of noop throughput at c=64")
	if p, ok := r.path("inproc"); ok {
		k, ok1 := at(p.keyward, 16)
		bl, ok2 := at(p.base, 16)
		what := "in-process hit p99 at c=16 ≤ 1.5× noop p99" + markAt(r, "inproc", 16)
		if ok1 && ok2 {
			w("| %s | %s (%s vs %s) | %s |", what, times(k.P99, bl.P99), fmtDur(k.P99), fmtDur(bl.P99), verdict(float64(k.P99) <= 1.5*float64(bl.P99)))
		} else {
			w("| %s | c=16 not measured | n/a |", what)
		}
	}
	tp("redis", 64, 0.85, "Redis hit ≥ 85% of redis-get throughput at c=64")
	tp("store", 64, 0.80, "store hit ≥ 80% of pgx-select throughput at c=64")
	if r.allocs != nil {
		what := "in-process hit ≤ 3 allocations per Validate beyond gRPC's own (the handler measured without gRPC)"
		n, line, ok := allocsFor(r.allocs, "BenchmarkValidateLocalHit")
		if ok {
			w("| %s | %d allocs/op (`%s`) | %s |", what, n, line, verdict(n <= 3))
		} else {
			w("| %s | no benchmark of the in-process path yet | n/a |", what)
		}
	}
	if d := r.disable; d != nil {
		w("| DisableKey p99 ≤ 10 ms with %d instances%s | p99 %s (p50 %s, %d keys) | %s |", d.Instances, mark(loadgen.Result{CPU: d.CPU}), fmtDur(d.P99), fmtDur(d.P50), d.Keys, verdict(d.P99 <= 10*time.Millisecond))
		w("| revocation: zero violations with caches on | %d valid=true in %d Validates on the other instances right after DisableKey returned | %s |", d.Violations, d.Checks, verdict(d.Violations == 0))
	}
	w("")

	if r.allocs != nil {
		w("### Allocations on the in-process path (`go test -bench -benchmem`)")
		w("")
		for _, a := range r.allocs {
			w("`go test -run '^$' -bench %s -benchmem %s`", a.Pattern, a.Pkg)
			w("")
			if len(a.Lines) > 0 {
				w("```")
				for _, l := range a.Lines {
					w("%s", l)
				}
				w("```")
				w("")
			}
			if a.Note != "" {
				w("%s", a.Note)
				w("")
			}
		}
	}
	if rows := policyCosts(r.allocs); len(rows) > 0 {
		w("### Cost of each key policy (issue 6)")
		w("")
		w("`BenchmarkPolicies`: the Validate handler in process (no gRPC, in-process cache hit), for a key with one policy, as throughput relative to a key with none (median ns/op of three rounds). Rate limits and quotas count every request (in process or in Redis, and in the store); they are reported, not held to the 90%% target.")
		w("")
		w("| policy | ns/op | throughput vs none | target ≥ 90%% |")
		w("| --- | ---: | ---: | --- |")
		for _, p := range rows {
			target := verdict(p.ratio >= 0.90)
			if !p.held {
				target = "reported"
			}
			w("| %s | %.0f | %.0f%% | %s |", p.name, p.ns, 100*p.ratio, target)
		}
		w("")
	}
	if len(r.paths) > 0 {
		w("### Where the CPU went during each measured step (cores of %d)", runtime.NumCPU())
		w("")
		w("Server: the process under test; load: the load generator; pg+redis: Postgres (this bench's connections and its background processes) and Redis; other: everything else; steal: taken by the hypervisor.")
		w("")
		w("| path | c | server | load | pg+redis | other | steal | baseline | server | load | pg+redis | other | steal |")
		w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
		for _, p := range r.paths {
			for _, k := range p.keyward {
				bl, ok := at(p.base, k.Concurrency)
				if !ok {
					continue
				}
				w("| %s | %d | %.2f | %.2f | %.2f | %.2f | %.2f | %s | %.2f | %.2f | %.2f | %.2f | %.2f |",
					p.path.name, k.Concurrency, k.CPU.Server, k.CPU.Load, k.CPU.Services, k.CPU.Other, k.CPU.Steal,
					p.path.baseline, bl.CPU.Server, bl.CPU.Load, bl.CPU.Services, bl.CPU.Other, bl.CPU.Steal)
			}
		}
		w("")
	}
	if d := r.disable; d != nil {
		w("### DisableKey with %d instances (in-process cache and Redis on, every cache warm)", d.Instances)
		w("")
		w("| keys disabled | mean | p50 | p99 | max | Validates after each, on the other instances | valid=true (violations) | errors |")
		w("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
		w("| %d | %s | %s | %s | %s | %d | %d | %d |", d.Keys, fmtDur(d.Mean), fmtDur(d.P50), fmtDur(d.P99), fmtDur(d.Max), d.Checks, d.Violations, d.CheckErrors)
		if d.FirstCheckError != "" {
			w("")
			w("First Validate error: %s", d.FirstCheckError)
		}
		w("")
		w("CPU during the DisableKey loop (cores): the three instances %.2f, kwbench %.2f, pg+redis %.2f, other %.2f, steal %.2f%s.",
			d.CPU.Server, d.CPU.Load, d.CPU.Services, d.CPU.Other, d.CPU.Steal, mark(loadgen.Result{CPU: d.CPU}))
		w("")
	}
	return b.String()
}

// allocsFor finds the first of the named benchmarks that ran.
func allocsFor(as []allocBench, names ...string) (int, string, bool) {
	for _, name := range names {
		for _, a := range as {
			if n, line, ok := a.allocsPerOp(name); ok {
				return n, line, true
			}
		}
	}
	return 0, "", false
}

func errNote(r loadgen.Result) string {
	if r.Errors == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d errors)", r.Errors)
}

func pct(a, b float64) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.0f%%", 100*a/b)
}

func times(a, b time.Duration) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", float64(a)/float64(b))
}

func fmtRPS(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	// thousands separators
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

func fmtDur(d time.Duration) string {
	us := float64(d) / float64(time.Microsecond)
	switch {
	case us < 1000:
		return fmt.Sprintf("%.0f µs", us)
	case us < 10000:
		return fmt.Sprintf("%.2f ms", us/1000)
	default:
		return fmt.Sprintf("%.1f ms", us/1000)
	}
}

// mark flags a pair of steps that other processes disturbed.
func mark(rs ...loadgen.Result) string {
	for _, x := range rs {
		if x.CPU.Other > otherCPUWarn {
			return " ⚠"
		}
	}
	return ""
}

func markAt(r *report, id string, c int) string {
	p, ok := r.path(id)
	if !ok {
		return ""
	}
	k, _ := at(p.keyward, c)
	b, _ := at(p.base, c)
	return mark(k, b)
}
