package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/testenv"
)

// revocationSize is how big one run of the revocation checker is.
type revocationSize struct {
	revocations int // successful DisableKey, DeleteKey and RegenerateKey calls
	writers     int // goroutines revoking and restoring keys, each on its own keys
	slots       int // keys in play at any time
	clients     int // Validate clients and as many Check clients per instance
}

// revocationSizes: the full size is the (≥ 10,000 revocations, make
// reliability); make test and CI run a tenth of it, -short less still.
func revocationSizeFor(short bool) revocationSize {
	switch {
	case fullSize():
		return revocationSize{revocations: 10_000, writers: 4, slots: 64, clients: 1}
	case short:
		return revocationSize{revocations: 150, writers: 2, slots: 16, clients: 1}
	}
	return revocationSize{revocations: 1000, writers: 3, slots: 48, clients: 1}
}

// hslot is a key in play: its current secret, and the one it replaced (by
// RegenerateKey, or by DeleteKey and a new CreateKey), which must stay
// refused.
type hslot struct {
	cur, prev atomic.Pointer[hsecret]
}

// checkRevocations runs the revocation checker on c: size.writers
// goroutines each revoke their keys in turn — DisableKey, DeleteKey or
// RegenerateKey, at random, through a random instance — and at once, on every
// instance concurrently, validate the old secret (alternately by Validate and
// by Check), then make the key usable again through another instance
// (EnableKey; the new secret; a new key) and validate it everywhere, which
// also puts it in every in-process tier for its next revocation. Meanwhile
// size.clients Validate and as many Check clients per instance validate the
// keys' current and previous secrets in a loop. Every call and write is
// recorded; history.judge decides them afterwards. It fails t on any
// violation, error, or a run that checked too little.
func checkRevocations(t *testing.T, c *cluster, size revocationSize, redisDesc string) {
	t.Helper()
	v := runRevocations(t, c, size, redisDesc)
	bad := v.violations + v.staleRefusals + v.wrongReasons
	if bad > 0 {
		t.Errorf("%d violations of the revocation contract; first: %s", bad, strings.Join(v.samples, "; "))
	}
	if n := v.errorCount(); n > 0 {
		t.Errorf("%d Validate/Check errors with every dependency up; first: %s", n, strings.Join(v.errorSamples, "; "))
	}
	if len(v.writeErrs) > 0 {
		t.Errorf("%d writes failed with every dependency up: %s", len(v.writeErrs), strings.Join(v.writeErrs, "; "))
	}
	if v.revocations < size.revocations && len(v.writeErrs) == 0 {
		t.Errorf("only %d revocations of %d", v.revocations, size.revocations)
	}
	if v.coveredAllInsts < v.revocations*9/10 {
		t.Errorf("only %d of %d revocations were checked afterwards on every instance: the checker checked too little",
			v.coveredAllInsts, v.revocations)
	}
	if v.localHits == 0 {
		t.Errorf("no in-process cache hit during the run: the checker did not exercise the in-process tier")
	}
}

// runRevocations is checkRevocations without the assertions: it logs the
// figures and returns the verdict.
func runRevocations(t *testing.T, c *cluster, size revocationSize, redisDesc string) *verdict {
	t.Helper()
	h := newHistory()
	tgs := histTargets(t, c)
	names := make([]string, len(c.insts))
	for i, in := range c.insts {
		names[i] = in.name
	}
	before := make([]metricsPage, len(c.insts))
	for i, in := range c.insts {
		before[i] = scrape(t, in.server)
	}

	slots := make([]hslot, size.slots)
	for i := range slots {
		in := c.insts[i%len(c.insts)]
		sent := h.now()
		id, secret := c.createKey(t, in, fmt.Sprintf("revocation-%d-%s", i, randomName(t)))
		slots[i].cur.Store(h.secret(id, secret, sent, h.now(), in.name))
	}

	// Background clients.
	stop := make(chan struct{})
	var cwg sync.WaitGroup
	for _, tg := range tgs {
		for _, m := range []histMethod{viaValidate, viaCheck} {
			for k := range size.clients {
				cwg.Add(1)
				go func() {
					defer cwg.Done()
					r := h.recorder()
					rng := rand.New(rand.NewPCG(uint64(tg.idx)<<8|uint64(m)<<4|uint64(k), uint64(time.Now().UnixNano())))
					for {
						select {
						case <-stop:
							return
						default:
						}
						sl := &slots[rng.IntN(len(slots))]
						s := sl.cur.Load()
						if rng.IntN(4) == 0 {
							if p := sl.prev.Load(); p != nil {
								s = p
							}
						}
						r.call(tg, m, s, rpcTimeout)
					}
				}()
			}
		}
	}
	stopClients := sync.OnceFunc(func() { close(stop); cwg.Wait() })
	defer stopClients()

	// Writers.
	var (
		next       atomic.Int64
		revokeLat  = map[histOp]*durations{histDisable: {}, histDelete: {}, histRegenerate: {}}
		allRevoke  durations
		restoreLat durations
		errMu      sync.Mutex
		writeErrs  []string
	)
	writeFailed := func(format string, args ...any) {
		errMu.Lock()
		writeErrs = append(writeErrs, fmt.Sprintf(format, args...))
		errMu.Unlock()
	}
	// probeAll validates s on every instance at once, each call recorded by
	// that instance's recorder of the writer.
	probeAll := func(rs []*recorder, s *hsecret, m histMethod) {
		var wg sync.WaitGroup
		for i, tg := range tgs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rs[i].call(tg, m, s, rpcTimeout)
			}()
		}
		wg.Wait()
	}
	start := time.Now()
	var wwg sync.WaitGroup
	for w := range size.writers {
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			rs := make([]*recorder, len(tgs))
			for i := range rs {
				rs[i] = h.recorder()
			}
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			var own []*hslot
			for i := w; i < len(slots); i += size.writers {
				own = append(own, &slots[i])
			}
			for k := 0; ; k++ {
				n := next.Add(1)
				if n > int64(size.revocations) {
					return
				}
				sl := own[k%len(own)]
				old := sl.cur.Load()
				wi := rng.IntN(len(c.insts))
				in, other := c.insts[wi], c.insts[(wi+1)%len(c.insts)]
				m := histMethod(n % 2)

				op := []histOp{histDisable, histDelete, histRegenerate}[rng.IntN(3)]
				var call func(context.Context, keywardv1.KeyServiceClient) error
				var newSecret string
				switch op {
				case histDisable:
					call = disable(old.keyID)
				case histDelete:
					call = deleteKey(old.keyID)
				case histRegenerate:
					call = regenerate(old.keyID, &newSecret)
				}
				sent, returned, err := h.write(in.name, func() error { _, err := c.mgmt(in, call); return err },
					map[*hsecret]histOp{old: op})
				if err != nil {
					writeFailed("%s of %s on %s: %v", op, old.keyID, in.name, err)
					return
				}
				took := time.Duration(returned - sent)
				revokeLat[op].add(took)
				allRevoke.add(took)
				probeAll(rs, old, m)

				// Make the key usable again, through another instance.
				var cur *hsecret
				switch op {
				case histDisable:
					s0, r0, err := h.write(other.name, func() error { _, err := c.mgmt(other, enable(old.keyID)); return err },
						map[*hsecret]histOp{old: histEnable})
					if err != nil {
						writeFailed("EnableKey of %s on %s: %v", old.keyID, other.name, err)
						return
					}
					restoreLat.add(time.Duration(r0 - s0))
					cur = old
				case histRegenerate:
					cur = h.secret(old.keyID, newSecret, sent, returned, in.name)
				case histDelete:
					var id, secret string
					var err error
					s0, r0, _ := h.write(other.name, func() error {
						ctx, cancel := rpcCtx()
						defer cancel()
						resp, e := other.kc.CreateKey(c.admin(ctx), &keywardv1.CreateKeyRequest{
							Key: &keywardv1.Key{DisplayName: fmt.Sprintf("revocation-%d", n)}})
						id, secret, err = resp.GetKey().GetKeyId(), resp.GetSecret(), e
						return e
					}, nil)
					if err != nil {
						writeFailed("CreateKey on %s: %v", other.name, err)
						return
					}
					restoreLat.add(time.Duration(r0 - s0))
					cur = h.secret(id, secret, s0, r0, other.name)
				}
				if cur != old {
					sl.prev.Store(old)
					sl.cur.Store(cur)
				}
				probeAll(rs, cur, 1-m)
			}
		}()
	}
	wwg.Wait()
	elapsed := time.Since(start)
	stopClients()

	v := h.judge(names)
	var hits, lookups float64
	for i, in := range c.insts {
		after := scrape(t, in.server)
		for _, res := range []string{"hit", "miss", "bypass"} {
			d := after.value("keyward_cache_lookups_total", map[string]string{"tier": "local", "result": res}) -
				before[i].value("keyward_cache_lookups_total", map[string]string{"tier": "local", "result": res})
			lookups += d
			if res == "hit" {
				hits += d
			}
		}
	}
	t.Logf("revocation checker: %d instances over one Postgres and %s, in-process cache on; %d writers, %d keys in play, %d+%d clients per instance",
		len(c.insts), redisDesc, size.writers, size.slots, size.clients, size.clients)
	t.Logf("  %d revocations in %v (%.0f/s): %d DisableKey, %d DeleteKey, %d RegenerateKey",
		v.revocations, elapsed.Round(time.Millisecond), float64(v.revocations)/elapsed.Seconds(),
		len(revokeLat[histDisable].snapshot()), len(revokeLat[histDelete].snapshot()), len(revokeLat[histRegenerate].snapshot()))
	t.Logf("  validations: %d (%d Validate, %d Check; %.0f/s); in-process tier: %.0f hits of %.0f lookups (%.0f%%)",
		v.calls, v.byMethod[viaValidate], v.byMethod[viaCheck], float64(v.calls)/elapsed.Seconds(), hits, lookups, 100*hits/max(lookups, 1))
	t.Logf("  judged: %d had to refuse, %d had to accept, %d overlapped a write; every instance checked %d of %d revocations afterwards",
		v.judgedRevoked, v.judgedValid, v.unjudged, v.coveredAllInsts, v.revocations)
	t.Logf("  VIOLATIONS: %d (accepted a secret after its revocation returned); refused after a write made it valid: %d; wrong reason: %d; errors: %d %v",
		v.violations, v.staleRefusals, v.wrongReasons, v.errorCount(), v.errors)
	t.Logf("  revocation RPC: %s", allRevoke.String())
	for _, op := range []histOp{histDisable, histDelete, histRegenerate} {
		t.Logf("    %-13s %s", op, revokeLat[op].String())
	}
	t.Logf("  restoring write (EnableKey, CreateKey): %s", restoreLat.String())

	v.writeErrs, v.localHits = writeErrs, hits
	if v.violations+v.staleRefusals+v.wrongReasons > 0 || v.errorCount() > 0 || len(writeErrs) > 0 {
		if dir := os.Getenv("KEYWARD_HISTORY_DIR"); dir != "" {
			path := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+".history")
			if err := h.dump(path, names); err != nil {
				t.Logf("dump the history: %v", err)
			} else {
				t.Logf("history written to %s", path)
			}
		}
	}
	return v
}

// TestRevocationCheckerCatchesAStaleInstance makes sure the checker can
// fail: the third instance uses a Redis of its own, so it never hears of
// the other two's invalidations and keeps answering from its stale
// in-process copies. The checker must count violations.
func TestRevocationCheckerCatchesAStaleInstance(t *testing.T) {
	dsn := testenv.Postgres(t)
	r := startRedis(t)
	c := startCluster(t, 2, dsn, r)
	own := startRedis(t)
	lone := startCluster(t, 1, dsn, own)
	lone.insts[0].name = "keyward-2 (own Redis)"
	c.insts = append(c.insts, lone.insts[0])
	// The lone instance has an admin key of its own, bootstrapped into the
	// same database: the cluster's key works on it too.
	size := revocationSize{revocations: 60, writers: 1, slots: 8, clients: 1}
	v := runRevocations(t, &cluster{dsn: c.dsn, redis: r, adminKey: c.adminKey, insts: c.insts[:2]}, size, "one Redis (control)")
	if v.violations > 0 {
		t.Fatalf("the control run with every instance on one Redis found %d violations: %s", v.violations, strings.Join(v.violationSamples, "; "))
	}
	v = runRevocations(t, c, size, "two Redis servers: keyward-2 hears no invalidations")
	if v.violations == 0 {
		t.Fatalf("the checker found no violation with an instance that hears no invalidations: it cannot fail")
	}
	t.Logf("the checker caught the stale instance: %d violations, e.g. %s", v.violations, v.violationSamples[0])
}
