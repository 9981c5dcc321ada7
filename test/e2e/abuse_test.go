package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/keymat"
	"github.com/keyward/keyward/internal/testenv"
)

// The throttle's defaults (--abuse-failures-per-second, --abuse-burst).
const (
	floodFailuresPerSecond = 20
	floodBurst             = 100
)

// TestAbuseFlood floods a real `keyward serve` on Postgres (no in-process
// tier, so every lookup is a store query) with made-up keys at about 5,000
// requests a second from four client addresses — over REST Validate, then
// over forward-auth — and measures what reaches the store, from /metrics:
// keyward_store_duration_seconds{op="get_by_hash"}. It must stay within
// what the throttle allows, addresses × (burst + rate × seconds), while a
// client on another address keeps validating its key. Short with -short
// or CI=true. The figures are printed (docs/abuse.md).
//
// KEYWARD_E2E_FLOOD_BASELINE=1 also floods a server with the throttle off
// and prints what reaches the store then.
func TestAbuseFlood(t *testing.T) {
	dsn := testenv.Postgres(t)
	d := 5 * time.Second
	if testing.Short() || os.Getenv("CI") == "true" {
		d = 2 * time.Second
	}
	throttles := []bool{true}
	if os.Getenv("KEYWARD_E2E_FLOOD_BASELINE") != "" {
		throttles = append(throttles, false)
	}
	for _, on := range throttles {
		var args []string
		if !on {
			args = []string{"--abuse-throttle-surfaces", "none"}
		}
		s := startServerWith(t, serverOptions{DataDir: t.TempDir(), DSN: dsn, Args: args})
		_, valid := s.createKey(t, `{"displayName": "legitimate client"}`)
		for i, surface := range []string{"rest", "forward-auth"} {
			name := surface
			if !on {
				name += "/throttle=off"
			}
			t.Run(name, func(t *testing.T) {
				// Each surface floods from addresses of its own: an address's
				// budget is shared by every surface.
				base := 10 + 10*i
				var from []string
				for a := range 4 {
					from = append(from, fmt.Sprintf("127.0.0.%d", base+a))
				}
				flood(t, s, floodPlan{surface: surface, rate: 5000, d: d, from: from, legit: fmt.Sprintf("127.0.0.%d", base+9), valid: valid, off: !on})
			})
		}
	}
}

type floodPlan struct {
	surface string
	rate    int           // requests a second, over all addresses
	d       time.Duration // how long
	from    []string      // the flood's source addresses
	legit   string        // the legitimate client's address
	valid   string        // its key
	off     bool          // the throttle is off: report only
}

// loopbackClient is an HTTP client whose connections come from local, an
// address of 127/8 (all of it is local on Linux).
func loopbackClient(local string, conns int) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy: nil, DialContext: d.DialContext, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns,
	}}
}

// probe sends one validation of key over the plan's surface and returns the
// HTTP status and whether the key was found valid.
func (p floodPlan) probe(ctx context.Context, c *http.Client, s *server, key string) (int, bool, error) {
	var req *http.Request
	if p.surface == "rest" {
		req, _ = http.NewRequestWithContext(ctx, "POST", s.BaseURL+"/v1/keys:validate", strings.NewReader(`{"key":"`+key+`"}`))
	} else {
		req, _ = http.NewRequestWithContext(ctx, "GET", s.BaseURL+"/v1/auth", nil)
		req.Header.Set("X-Api-Key", key)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if p.surface == "rest" {
		var m struct{ Valid bool }
		json.Unmarshal(body, &m)
		return resp.StatusCode, resp.StatusCode == 200 && m.Valid, nil
	}
	return resp.StatusCode, resp.StatusCode == 200, nil
}

// latencies summarises a sample.
type latencies []time.Duration

func (l latencies) q(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

func flood(t *testing.T, s *server, p floodPlan) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	legit := loopbackClient(p.legit, 2)
	var legitOK, legitBad atomic.Int64
	var legitMu sync.Mutex
	var legitLat latencies
	legitOnce := func() {
		start := time.Now()
		code, ok, err := p.probe(ctx, legit, s, p.valid)
		took := time.Since(start)
		if ctx.Err() != nil {
			return
		}
		if err != nil || !ok {
			legitBad.Add(1)
			t.Errorf("the legitimate client's key: status %d, valid %v, %v", code, ok, err)
			return
		}
		legitOK.Add(1)
		legitMu.Lock()
		legitLat = append(legitLat, took)
		legitMu.Unlock()
	}
	for range 50 { // its latency without the flood
		legitOnce()
	}
	baseline := legitLat
	legitLat = nil
	legitBefore := legitOK.Load()

	before := scrape(t, s)
	getByHash := map[string]string{"op": "get_by_hash"}
	throttledLabel := map[string]string{"surface": p.surface}

	// The flood: a dispatcher paces requests at p.rate, round robin, into a
	// queue per address that its workers drain; what the workers cannot take
	// is dropped (and counted), so the offered rate stays what was asked.
	const workersPerAddr = 24
	var sent, dropped, throttled, answered, failedReq atomic.Int64
	var wg sync.WaitGroup
	queues := make([]chan struct{}, len(p.from))
	for i, addr := range p.from {
		queues[i] = make(chan struct{}, 64)
		c := loopbackClient(addr, workersPerAddr)
		for range workersPerAddr {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range queues[i] {
					k, err := keymat.Generate("live")
					if err != nil {
						t.Error(err)
						return
					}
					code, _, err := p.probe(ctx, c, s, k.String())
					switch {
					case err != nil:
						if ctx.Err() == nil {
							failedReq.Add(1)
						}
					case code == http.StatusTooManyRequests:
						throttled.Add(1)
					default:
						answered.Add(1)
					}
				}
			}()
		}
	}
	legitDone := make(chan struct{})
	go func() { // the legitimate client, every 20 ms during the flood
		defer close(legitDone)
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
				legitOnce()
			}
		}
	}()
	start := time.Now()
	tick := time.NewTicker(time.Millisecond)
	next := 0
	for now := start; now.Sub(start) < p.d; now = <-tick.C {
		due := int(float64(p.rate) * time.Since(start).Seconds())
		for ; next < due; next++ {
			select {
			case queues[next%len(queues)] <- struct{}{}:
				sent.Add(1)
			default:
				dropped.Add(1)
			}
		}
	}
	tick.Stop()
	for _, q := range queues {
		close(q)
	}
	wg.Wait()
	elapsed := time.Since(start)
	cancel()
	<-legitDone
	after := scrape(t, s)

	legitDuring := legitOK.Load() - legitBefore
	queries := after.value("keyward_store_duration_seconds", getByHash) - before.value("keyward_store_duration_seconds", getByHash)
	floodQueries := queries - float64(legitDuring) // Postgres without Redis: each valid validation is one store query
	bound := float64(len(p.from)) * (floodBurst + floodFailuresPerSecond*elapsed.Seconds())
	gotThrottled := after.value("keyward_abuse_throttled_total", throttledLabel) - before.value("keyward_abuse_throttled_total", throttledLabel)

	total := sent.Load()
	t.Logf("%s flood from %d addresses: %d requests in %.1fs (%.0f/s offered, %.0f/s sent, %d dropped by the client), "+
		"%d answered 429 without a lookup, %d looked up, %d transport errors",
		p.surface, len(p.from), total, elapsed.Seconds(), float64(p.rate), float64(total)/elapsed.Seconds(), dropped.Load(),
		throttled.Load(), answered.Load(), failedReq.Load())
	t.Logf("%s flood: %.0f store queries for made-up keys (%.1f/s); the throttle allows at most %.0f (%.1f/s): %d addresses × (%d + %d/s × %.1fs)",
		p.surface, floodQueries, floodQueries/elapsed.Seconds(), bound, bound/elapsed.Seconds(), len(p.from), floodBurst, floodFailuresPerSecond, elapsed.Seconds())
	held := after.value("keyward_refusals_held_total", nil) - before.value("keyward_refusals_held_total", nil)
	late := after.value("keyward_refusals_late_total", nil) - before.value("keyward_refusals_late_total", nil)
	t.Logf("%s flood: refusals held to the floor: %.0f, later than the floor: %.0f", p.surface, held, late)
	t.Logf("%s flood: legitimate client on %s: %d valid during the flood, none refused; latency p50 %v p99 %v (before the flood: p50 %v p99 %v)",
		p.surface, p.legit, legitDuring, legitLat.q(0.5).Round(10*time.Microsecond), legitLat.q(0.99).Round(10*time.Microsecond),
		baseline.q(0.5).Round(10*time.Microsecond), baseline.q(0.99).Round(10*time.Microsecond))

	if p.off {
		return
	}
	// What reaches the store: within the throttle's allowance, with slack for
	// the requests each address has in flight when its budget runs low.
	if slack := float64(len(p.from) * workersPerAddr); floodQueries > bound+slack {
		t.Errorf("%.0f store queries for made-up keys, want at most %.0f (+%.0f in flight)", floodQueries, bound, slack)
	}
	if answered.Load()+throttled.Load() == 0 || throttled.Load() == 0 {
		t.Fatalf("nothing was throttled: %d answered, %d throttled", answered.Load(), throttled.Load())
	}
	if gotThrottled != float64(throttled.Load()) {
		t.Errorf("keyward_abuse_throttled_total{surface=%q} moved by %v; the clients saw %d answers 429", p.surface, gotThrottled, throttled.Load())
	}
	if float64(answered.Load()) > bound+float64(len(p.from)*workersPerAddr) {
		t.Errorf("%d made-up keys looked up, want at most %.0f", answered.Load(), bound)
	}
	// The legitimate client kept working, at an ordinary latency for this
	// machine (shared with the flood's own clients).
	if legitBad.Load() > 0 || legitDuring < int64(p.d/(20*time.Millisecond))/4 {
		t.Errorf("legitimate client: %d valid answers during the flood, %d failures", legitDuring, legitBad.Load())
	}
	if p50, p99 := legitLat.q(0.5), legitLat.q(0.99); p50 > 100*time.Millisecond || p99 > time.Second {
		t.Errorf("legitimate client: p50 %v, p99 %v during the flood", p50, p99)
	}
}

// TestSizeLimitsServe: a real `keyward serve` refuses oversized headers
// (431), REST bodies (413 with a JSON error) and gRPC messages
// (RESOURCE_EXHAUSTED) before parsing them.
func TestSizeLimitsServe(t *testing.T) {
	t.Parallel()
	s := startServer(t, t.TempDir(), "")
	big := strings.Repeat("x", 1<<20)

	req, _ := http.NewRequest("GET", s.BaseURL+"/v1/auth", nil)
	req.Header.Set("X-Api-Key", big)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("forward-auth with a 1 MiB header: %d, want 431", resp.StatusCode)
	}

	r := s.call(t, "POST", "/v1/keys:validate", `{"key": "`+big+`"}`, false)
	if m := r.want(t, http.StatusRequestEntityTooLarge); m["code"] != float64(codes.ResourceExhausted) {
		t.Errorf("REST validate with a 1 MiB body: %v", m)
	}

	cc, err := grpc.NewClient(s.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := checkCtx()
	defer cancel()
	_, err = keywardv1.NewKeyServiceClient(cc).Validate(ctx, &keywardv1.ValidateRequest{Key: big + big})
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("gRPC Validate with a 2 MiB message: %v, want RESOURCE_EXHAUSTED", err)
	}
}
