package main

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// policyCost is one row of the policy table: a key with one policy beside
// a key with none.
type policyCost struct {
	name  string
	ns    float64 // median ns/op
	ratio float64 // ns/op of "none" over this one's: relative throughput
	held  bool    // held to the 90% target (no network round trip)
}

var policyLine = regexp.MustCompile(`^BenchmarkPolicies/([a-z_]+)(?:-\d+)? \d+ ([\d.]+) ns/op`)

// policyCosts reads BenchmarkPolicies' lines (several rounds) into rows in
// the order they first appear, "none" first.
func policyCosts(as []allocBench) []policyCost {
	samples := map[string][]float64{}
	var order []string
	for _, a := range as {
		for _, l := range a.Lines {
			m := policyLine.FindStringSubmatch(l)
			if m == nil {
				continue
			}
			ns, err := strconv.ParseFloat(m[2], 64)
			if err != nil {
				continue
			}
			if _, seen := samples[m[1]]; !seen {
				order = append(order, m[1])
			}
			samples[m[1]] = append(samples[m[1]], ns)
		}
	}
	none, ok := samples["none"]
	if !ok {
		return nil
	}
	base := medianOf(none)
	var out []policyCost
	for _, name := range order {
		ns := medianOf(samples[name])
		out = append(out, policyCost{
			name: name, ns: ns, ratio: base / ns,
			// The issue holds every policy but the counting ones (rate
			// limits and quotas) to the target.
			held: !strings.HasPrefix(name, "quota") && !strings.HasPrefix(name, "rate_limit"),
		})
	}
	return out
}

func medianOf(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
