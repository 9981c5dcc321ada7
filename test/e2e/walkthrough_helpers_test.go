package e2e

import (
	"slices"
	"testing"
)

// The walk-through check is only as good as its matcher: these pin it down.
func TestExpectedPrintsAndOrder(t *testing.T) {
	t.Parallel()
	script := "A=$(x)\n" +
		"echo a | jq .b            # prints: kw_live_\n" +
		"cmd \\\n  more | jq -r .c   # prints: hall 3\n" +
		"echo '#' # a comment\n"
	if got, want := expectedPrints(script), []string{"kw_live_", "hall 3"}; !slices.Equal(got, want) {
		t.Fatalf("expectedPrints = %q, want %q", got, want)
	}
	for _, c := range []struct {
		out  string
		want []string
		ok   bool
	}{
		{"\"kw_live_ab\"\nhall 3\n", []string{"kw_live_", "hall 3"}, true},
		{"hall 3\nkw_live_\n", []string{"kw_live_", "hall 3"}, false},       // wrong order
		{"REASON_VALID\n", []string{"REASON_VALID", "REASON_VALID"}, false}, // one line, one expectation
		{"x\n", []string{"y"}, false},
	} {
		if _, ok := containsInOrder(c.out, c.want); ok != c.ok {
			t.Errorf("containsInOrder(%q, %q) = %v, want %v", c.out, c.want, ok, c.ok)
		}
	}
}
