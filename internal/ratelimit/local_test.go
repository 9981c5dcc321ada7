package ratelimit

import (
	"strconv"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/keys"
)

func TestLocalForgetsPastTATsFirst(t *testing.T) {
	c := newFakeClock()
	l := newLocal(4, c.Now)                                  // one shard of 4
	slow := keys.RateLimit{Limit: 1, Period: time.Hour}      // TAT an hour ahead
	fast := keys.RateLimit{Limit: 1000, Period: time.Second} // TAT 1ms ahead
	for _, id := range []string{"a", "b"} {
		allow(t, l, id, slow)
		c.Advance(time.Millisecond)
	}
	allow(t, l, "c", fast)
	allow(t, l, "d", fast)
	c.Advance(10 * time.Millisecond) // c's and d's TATs are past
	allow(t, l, "e", slow)
	if n := l.len(); n != 3 {
		t.Errorf("%d keys held, want 3 (a, b, e)", n)
	}
	for _, id := range []string{"a", "b"} {
		if d := allow(t, l, id, slow); d.Allowed {
			t.Errorf("key %s was forgotten while c and d had expired", id)
		}
	}
	c.Advance(time.Millisecond)
	allow(t, l, "f", slow)
	c.Advance(time.Millisecond)
	allow(t, l, "g", slow) // full, nothing past: the earliest TAT (a's) goes
	if n := l.len(); n > 4 {
		t.Errorf("%d keys held, want at most 4", n)
	}
	for _, id := range []string{"b", "e", "f", "g"} {
		if d := allow(t, l, id, slow); d.Allowed {
			t.Errorf("key %s was forgotten; a had the earliest TAT", id)
		}
	}
	if d := allow(t, l, "a", slow); !d.Allowed {
		t.Errorf("key a is still held: %+v", d)
	}
}

func TestLocalStaysBounded(t *testing.T) {
	c := newFakeClock()
	l := newLocal(1000, c.Now)
	rl := keys.RateLimit{Limit: 1, Period: time.Hour}
	for i := range 20_000 {
		allow(t, l, "key_"+strconv.Itoa(i), rl)
		if i%1000 == 0 {
			c.Advance(time.Millisecond)
		}
	}
	if n := l.len(); n > 1000 || n < 900 {
		t.Errorf("%d keys held, want at most 1000 and not much less", n)
	}
	// The newest key is held, so it is limited.
	if d := allow(t, l, "key_19999", rl); d.Allowed {
		t.Errorf("the newest key was forgotten: %+v", d)
	}
}
