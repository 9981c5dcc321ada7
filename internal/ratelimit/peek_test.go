package ratelimit

import (
	"testing"
	"time"

	"github.com/keyward/keyward/internal/keys"
)

func TestPeekCountsNothing(t *testing.T) {
	c := newFakeClock()
	l := newLocal(100, c.Now)
	rl := keys.RateLimit{Limit: 10, Period: time.Second, Burst: 3}
	for range 10 {
		if d, err := l.Peek("k", rl); err != nil || !d.Allowed || d.Remaining != 2 {
			t.Fatalf("Peek of a fresh key: %+v, %v; want allowed with 2 remaining", d, err)
		}
	}
	for i := range 3 {
		if d := allow(t, l, "k", rl); !d.Allowed {
			t.Fatalf("request %d refused after peeks: %+v", i+1, d)
		}
	}
	d, err := l.Peek("k", rl)
	if err != nil || d.Allowed || d.RetryAfter != 100*time.Millisecond {
		t.Fatalf("Peek of a spent key: %+v, %v; want refused, retry after 100ms", d, err)
	}
	if d := allow(t, l, "k", rl); d.Allowed {
		t.Fatalf("Allow after Peek said refused: %+v", d)
	}
	if _, err := l.Peek("k", keys.RateLimit{}); err == nil {
		t.Error("Peek with an invalid limit: no error")
	}
}

func TestRefundGivesBackOneRequest(t *testing.T) {
	c := newFakeClock()
	l := newLocal(100, c.Now)
	rl := keys.RateLimit{Limit: 10, Period: time.Second, Burst: 2}
	allow(t, l, "k", rl)
	allow(t, l, "k", rl)
	if d := allow(t, l, "k", rl); d.Allowed {
		t.Fatalf("third request of a burst of 2 allowed: %+v", d)
	}
	if err := l.Refund("k", rl); err != nil {
		t.Fatal(err)
	}
	if d := allow(t, l, "k", rl); !d.Allowed {
		t.Fatalf("request after a refund refused: %+v", d)
	}
	// Refunding everything leaves nothing held, and never more than a full burst.
	for range 5 {
		if err := l.Refund("k", rl); err != nil {
			t.Fatal(err)
		}
	}
	if n := l.len(); n != 0 {
		t.Errorf("%d keys held after refunding every request, want 0", n)
	}
	if d, _ := l.Peek("k", rl); !d.Allowed || d.Remaining != 1 {
		t.Errorf("after refunds: %+v, want a fresh burst (1 remaining after one more)", d)
	}
	if err := l.Refund("unknown", rl); err != nil {
		t.Errorf("Refund of an unknown key: %v", err)
	}
}
