package e2e

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/keymat"
)

// TestRefusalTiming measures, over REST Validate and forward-auth, how long
// a real `keyward serve` takes to refuse an unknown key (a fresh random one
// each time, so it misses every cache and reaches the store), a disabled,
// a deleted and an expired one — interleaved in random order, many times —
// and asserts that the medians of the known-but-unusable keys differ from
// the unknown key's by no more than noise.
//
// Noise is measured, not guessed: the difference between the medians of
// two random halves of the pooled samples of the two kinds, over 2,000
// splits (a permutation test). Under "no difference" the observed gap
// exceeds that distribution's 99.9th percentile once in a thousand, so a
// gap beyond it is a real difference; a measurement that fails is taken
// again once, so that a burst of load on a shared machine does not fail
// the test (a real difference fails twice). Without --abuse-refusal-floor
// the gap is the store read (on SQLite about 270 µs of 590), far beyond it.
//
// KEYWARD_E2E_TIMING_BASELINE=1 also measures with the floor off and
// prints it, for docs/abuse.md.
func TestRefusalTiming(t *testing.T) {
	t.Parallel()
	n := 300
	if testing.Short() || os.Getenv("CI") == "true" {
		n = 120
	}
	floors := []string{""} // the default
	if os.Getenv("KEYWARD_E2E_TIMING_BASELINE") != "" {
		floors = append(floors, "0")
	}
	for _, mode := range storeModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			dsn := mode.dsn(t)
			for _, floor := range floors {
				args := []string{"--abuse-throttle-surfaces", "none"} // one address refuses thousands of keys
				name := "floor=default"
				if floor != "" {
					args = append(args, "--abuse-refusal-floor", floor)
					name = "floor=" + floor
				}
				t.Run(name, func(t *testing.T) {
					s := startServerWith(t, serverOptions{DataDir: t.TempDir(), DSN: dsn, Args: args})
					assert := floor == ""
					for attempt := 1; ; attempt++ {
						ok := measureRefusals(t, s, n, assert && attempt == 2)
						if ok || !assert || attempt == 2 {
							break
						}
						t.Logf("medians differ beyond noise; measuring again")
					}
				})
			}
		})
	}
}

// refusalClasses are the kinds of refused keys compared with "unknown".
var refusalClasses = []string{"unknown", "disabled", "deleted", "expired"}

// measureRefusals takes n samples of each class over each surface and
// reports whether every class's median is within noise of unknown's;
// with fail set, a gap beyond noise fails the test.
func measureRefusals(t *testing.T, s *server, n int, fail bool) bool {
	t.Helper()
	keys := map[string]string{}
	k, secret := s.createKey(t, `{"displayName": "timing disabled"}`)
	s.call(t, "POST", "/v1/keys/"+keyID(k)+":disable", "", true).want(t, http.StatusOK)
	keys["disabled"] = secret
	k, secret = s.createKey(t, `{"displayName": "timing deleted"}`)
	s.call(t, "DELETE", "/v1/keys/"+keyID(k), "", true).want(t, http.StatusOK)
	keys["deleted"] = secret
	_, keys["expired"] = s.createKey(t, `{"displayName": "timing expired", "ttl": "1s"}`)
	time.Sleep(1100 * time.Millisecond)

	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1}}
	send := func(surface, key string) time.Duration {
		var req *http.Request
		if surface == "rest" {
			req, _ = http.NewRequest("POST", s.BaseURL+"/v1/keys:validate", strings.NewReader(`{"key":"`+key+`"}`))
		} else {
			req, _ = http.NewRequest("GET", s.BaseURL+"/v1/auth", nil)
			req.Header.Set("X-Api-Key", key)
		}
		start := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		took := time.Since(start)
		if resp.StatusCode != 200 && resp.StatusCode != 401 && resp.StatusCode != 403 {
			t.Fatalf("%s: status %d", surface, resp.StatusCode)
		}
		return took
	}
	key := func(class string) string {
		if class != "unknown" {
			return keys[class]
		}
		sec, err := keymat.Generate("live")
		if err != nil {
			t.Fatal(err)
		}
		return sec.String()
	}
	type combo struct{ surface, class string }
	var combos []combo
	for _, surface := range []string{"rest", "forward-auth"} {
		for _, class := range refusalClasses {
			combos = append(combos, combo{surface, class})
		}
	}
	for _, c := range combos { // warm: connection, caches
		for range 5 {
			send(c.surface, key(c.class))
		}
	}
	samples := map[combo][]float64{}
	for range n {
		rand.Shuffle(len(combos), func(i, j int) { combos[i], combos[j] = combos[j], combos[i] })
		for _, c := range combos {
			samples[c] = append(samples[c], float64(send(c.surface, key(c.class)))/1e3) // µs
		}
	}

	ok := true
	for _, surface := range []string{"rest", "forward-auth"} {
		unknown := samples[combo{surface, "unknown"}]
		line := fmt.Sprintf("%-12s n=%d  unknown p25/p50/p75 %.0f/%.0f/%.0f µs", surface, n, quantile(unknown, .25), quantile(unknown, .5), quantile(unknown, .75))
		for _, class := range refusalClasses[1:] {
			other := samples[combo{surface, class}]
			gap := quantile(other, .5) - quantile(unknown, .5)
			noise := medianNoise(unknown, other, 2000)
			line += fmt.Sprintf(";  %s p50 %.0f (%+.0f, noise ±%.0f)", class, quantile(other, .5), gap, noise)
			if abs(gap) > noise {
				ok = false
				if fail {
					t.Errorf("%s: %s keys' median is %+.0f µs from unknown keys', beyond the noise of ±%.0f µs", surface, class, gap, noise)
				}
			}
		}
		t.Log(line)
	}
	return ok
}

// medianNoise is the 99.9th percentile of the gap between the medians of
// two random groups of the sizes of a and b drawn from both: what the gap
// is when there is no difference.
func medianNoise(a, b []float64, rounds int) float64 {
	pooled := append(slices.Clone(a), b...)
	gaps := make([]float64, rounds)
	for i := range gaps {
		rand.Shuffle(len(pooled), func(i, j int) { pooled[i], pooled[j] = pooled[j], pooled[i] })
		gaps[i] = abs(quantile(pooled[:len(a)], .5) - quantile(pooled[len(a):], .5))
	}
	return quantile(gaps, .999)
}

func quantile(v []float64, q float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}
