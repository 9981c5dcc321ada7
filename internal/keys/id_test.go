package keys

import (
	"strings"
	"testing"
	"time"
)

func TestNewIDSortsByTime(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	prev := ""
	for i := 0; i < 1000; i++ {
		id, err := NewID(t0.Add(time.Duration(i) * time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		if len(id) != 30 || !strings.HasPrefix(id, IDPrefix) {
			t.Fatalf("shape %q", id)
		}
		if id <= prev {
			t.Fatalf("%q sorts before %q though created later", id, prev)
		}
		prev = id
	}
}
