package abuse

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/validate"
)

// fakeClock is a monotonic clock the test moves.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newThrottle(t *testing.T, o Options) (*Throttle, *fakeClock, *bytes.Buffer) {
	t.Helper()
	c := newFakeClock()
	var log bytes.Buffer
	o.now = c.Now
	o.Logger = slog.New(slog.NewTextHandler(&log, nil))
	th, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return th, c, &log
}

var (
	attacker  = netip.MustParseAddr("192.0.2.7")
	bystander = netip.MustParseAddr("192.0.2.8")
)

// fail is one request that fails; it reports whether it was admitted.
func fail(th *Throttle, s Surface, a netip.Addr) bool {
	p, _, ok := th.Admit(s, a)
	if ok {
		p.Done(true)
	}
	return ok
}

func TestThrottleBurstThenRate(t *testing.T) {
	th, c, log := newThrottle(t, Options{PerSecond: 10, Burst: 20, Surfaces: []Surface{REST}})
	for i := range 20 {
		if !fail(th, REST, attacker) {
			t.Fatalf("failure %d of a burst of 20 throttled", i+1)
		}
	}
	p, retry, ok := th.Admit(REST, attacker)
	if ok || retry <= 0 || retry > 100*time.Millisecond {
		t.Fatalf("21st request: admitted %v, retry after %v; want throttled for at most 100ms", ok, retry)
	}
	p.Done(true) // the zero Pass: nothing
	if !fail(th, REST, bystander) {
		t.Error("another address was throttled")
	}
	// 10 a second: over 2 s, 20 more failures and no more.
	admitted := 0
	for range 200 {
		c.Advance(10 * time.Millisecond)
		if fail(th, REST, attacker) {
			admitted++
		}
	}
	if admitted < 19 || admitted > 21 {
		t.Errorf("%d failures admitted in 2s at 10/s, want 20", admitted)
	}
	if got := th.Throttled(REST); got != 200-uint64(admitted)+1 {
		t.Errorf("Throttled = %d, want %d", got, 200-admitted+1)
	}
	if got := th.Failures(REST); got != 20+uint64(admitted)+1 {
		t.Errorf("Failures = %d, want %d", got, 20+admitted+1)
	}
	if lines := strings.Count(log.String(), "throttling failed API key validations"); lines != 1 {
		t.Errorf("%d log lines about throttling within 2s, want 1:\n%s", lines, log)
	}
	if !strings.Contains(log.String(), "address=192.0.2.7") || !strings.Contains(log.String(), "surface=rest") {
		t.Errorf("log line does not name the address and surface: %s", log)
	}
}

func TestThrottleIgnoresSuccesses(t *testing.T) {
	th, _, _ := newThrottle(t, Options{PerSecond: 1, Burst: 4, Surfaces: []Surface{ForwardAuth}})
	for i := range 1000 {
		p, _, ok := th.Admit(ForwardAuth, attacker)
		if !ok {
			t.Fatalf("valid request %d throttled", i+1)
		}
		p.Done(false)
	}
	// Spend the budget down to its reserve: then failures are counted in
	// advance, and successes given back.
	fail(th, ForwardAuth, attacker)
	fail(th, ForwardAuth, attacker)
	fail(th, ForwardAuth, attacker)
	for i := range 100 {
		p, _, ok := th.Admit(ForwardAuth, attacker)
		if !ok {
			t.Fatalf("valid request %d throttled with one failure left", i+1)
		}
		if !p.reserved {
			t.Fatal("Admit below the reserve did not count in advance")
		}
		p.Done(false)
	}
	if !fail(th, ForwardAuth, attacker) {
		t.Error("the last failure of the burst was throttled")
	}
	if _, _, ok := th.Admit(ForwardAuth, attacker); ok {
		t.Error("admitted after the burst was spent")
	}
}

// TestThrottleConcurrentOvershoot: however many requests an address sends at
// once, failures admitted stay within the burst plus the few let through
// while more than half of it was left.
func TestThrottleConcurrentOvershoot(t *testing.T) {
	th, _, _ := newThrottle(t, Options{PerSecond: 1, Burst: 100, Surfaces: []Surface{REST}})
	const workers = 64
	var admitted atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for range 50 {
				p, _, ok := th.Admit(REST, attacker)
				if !ok {
					continue
				}
				admitted.Add(1)
				time.Sleep(50 * time.Microsecond) // the lookup
				p.Done(true)
			}
		}()
	}
	close(start)
	wg.Wait()
	if n := admitted.Load(); n < 100 || n > 100+workers {
		t.Errorf("%d failures admitted from one address, want 100 to %d", n, 100+workers)
	}
}

func TestThrottleSurfacesAndAddresses(t *testing.T) {
	th, _, _ := newThrottle(t, Options{PerSecond: 1, Burst: 1, Surfaces: []Surface{REST, Check}})
	for _, s := range []Surface{ForwardAuth, GRPC} {
		for range 10 {
			if !fail(th, s, attacker) {
				t.Fatalf("surface %s is off but throttled", s)
			}
		}
	}
	var none *Throttle
	if p, _, ok := none.Admit(REST, attacker); !ok {
		t.Error("nil Throttle throttled")
	} else {
		p.Done(true)
	}

	// An IPv6 /64 is one budget; the next /64 another; v4-mapped is v4.
	fail(th, REST, netip.MustParseAddr("2001:db8:1:2::1"))
	if _, _, ok := th.Admit(REST, netip.MustParseAddr("2001:db8:1:2:ffff::9")); ok {
		t.Error("another address of the same /64 has its own budget")
	}
	if _, _, ok := th.Admit(REST, netip.MustParseAddr("2001:db8:1:3::1")); !ok {
		t.Error("the next /64 shares the budget")
	}
	fail(th, REST, netip.MustParseAddr("198.51.100.1"))
	if _, _, ok := th.Admit(REST, netip.MustParseAddr("::ffff:198.51.100.1")); ok {
		t.Error("an IPv4-mapped address has a budget of its own")
	}
	if _, _, ok := th.Admit(REST, netip.MustParseAddr("198.51.100.2")); !ok {
		t.Error("IPv4 addresses share a budget")
	}
	// Unknown addresses share one budget.
	fail(th, Check, netip.Addr{})
	if _, _, ok := th.Admit(Check, netip.Addr{}); ok {
		t.Error("unknown addresses are not throttled together")
	}
	// Surfaces share an address's budget.
	if _, _, ok := th.Admit(Check, netip.MustParseAddr("198.51.100.1")); ok {
		t.Error("an address throttled on REST is not throttled on Check")
	}
}

func TestThrottleMemoryBounded(t *testing.T) {
	th, c, _ := newThrottle(t, Options{PerSecond: 1, Burst: 10, Surfaces: []Surface{REST}, MaxAddresses: 1000})
	for i := range 50_000 {
		fail(th, REST, netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
		if i%100 == 0 {
			c.Advance(time.Millisecond)
		}
	}
	if held := th.Addresses(); held > 1000 || held < 500 {
		t.Errorf("%d addresses held, want at most 1000 (and not far fewer)", held)
	}
}

func TestFailed(t *testing.T) {
	counted := map[validate.Reason]bool{
		validate.ReasonNotFound: true, validate.ReasonMalformed: true, validate.ReasonDisabled: true,
		validate.ReasonExpired: true, validate.ReasonIPNotAllowed: true,
	}
	for r := validate.ReasonValid; r <= validate.ReasonUsageExceeded; r++ {
		if Failed(r) != counted[r] {
			t.Errorf("Failed(%s) = %v", r, Failed(r))
		}
	}
}

func TestParseSurfaces(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []Surface
		err  bool
	}{
		{"rest,forward-auth", []Surface{REST, ForwardAuth}, false},
		{"grpc,check", []Surface{GRPC, Check}, false},
		{"none", nil, false},
		{"rest,envoy", nil, true},
	} {
		got, err := ParseSurfaces(strings.Split(c.in, ","))
		if (err != nil) != c.err || (!c.err && strconv.Quote(fmtSurfaces(got)) != strconv.Quote(fmtSurfaces(c.want))) {
			t.Errorf("ParseSurfaces(%q) = %v, %v", c.in, got, err)
		}
	}
}

func fmtSurfaces(ss []Surface) string {
	var out []string
	for _, s := range ss {
		out = append(out, s.String())
	}
	return strings.Join(out, ",")
}
