package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// allocBench is one `go test -bench -benchmem` run kwbench includes.
type allocBench struct {
	Pkg     string // as given to go test
	Pattern string
	Lines   []string // the Benchmark… result lines
	Note    string   // why nothing was measured, or what went wrong
}

// allocsPerOp reads "N allocs/op" from a benchmark line whose name starts
// with prefix; ok is false if there is no such line.
func (b allocBench) allocsPerOp(prefix string) (n int, line string, ok bool) {
	for _, l := range b.Lines {
		if !strings.HasPrefix(l, prefix) {
			continue
		}
		if m := allocsRE.FindStringSubmatch(l); m != nil {
			n, _ = strconv.Atoi(m[1])
			return n, l, true
		}
	}
	return 0, "", false
}

var allocsRE = regexp.MustCompile(`(\d+) allocs/op`)

// allocBenches runs the allocation benchmarks of the in-process path, each
// only if its package has it: BenchmarkValidateLocalHit in
// internal/keyservice (the Validate handler on an in-process hit, without
// gRPC) and the Check/Validate benchmarks of internal/extauthz.
func allocBenches(ctx context.Context, root string) []allocBench {
	runs := []struct {
		pkg, dir, pattern, want string
		extra                   []string
	}{
		{"./internal/keyservice/", "internal/keyservice", "BenchmarkValidateLocalHit", "func BenchmarkValidateLocalHit(", nil},
		{"./internal/extauthz/", "internal/extauthz", ".", "func Benchmark", nil},
		// Three rounds, so the policy table can take each one's median.
		{"./internal/keyservice/", "internal/keyservice", "BenchmarkPolicies", "func BenchmarkPolicies(", []string{"-count", "3"}},
	}
	var out []allocBench
	for _, r := range runs {
		b := allocBench{Pkg: r.pkg, Pattern: r.pattern}
		if !hasInTests(filepath.Join(root, r.dir), r.want, strings.HasSuffix(r.pkg, "...")) {
			b.Note = "no " + strings.TrimSuffix(strings.TrimPrefix(r.want, "func "), "(") + " in " + r.dir + "; skipped"
			out = append(out, b)
			continue
		}
		logf("go test -run '^$' -bench %s -benchmem %s", r.pattern, r.pkg)
		args := append([]string{"test", "-run", "^$", "-bench", r.pattern, "-benchmem"}, r.extra...)
		cmd := exec.CommandContext(ctx, "go", append(args, r.pkg)...)
		cmd.Dir = root
		outb, err := cmd.CombinedOutput()
		for _, l := range strings.Split(string(outb), "\n") {
			if strings.HasPrefix(l, "Benchmark") && strings.Contains(l, "ns/op") {
				b.Lines = append(b.Lines, strings.Join(strings.Fields(l), " "))
			}
		}
		if err != nil {
			b.Note = "go test failed: " + err.Error() + ": " + lastLines(string(outb), 5)
		}
		out = append(out, b)
	}
	return out
}

// hasInTests reports whether a _test.go file in dir (and below, if deep)
// contains s.
func hasInTests(dir, s string, deep bool) bool {
	found := false
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || found {
			return filepath.SkipDir
		}
		if d.IsDir() {
			if path != dir && !deep {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, "_test.go") {
			if b, err := os.ReadFile(path); err == nil && strings.Contains(string(b), s) {
				found = true
			}
		}
		return nil
	})
	return found
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
