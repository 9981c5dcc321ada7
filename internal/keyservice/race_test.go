package keyservice_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"math/big"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/keymat"
	"github.com/keyward/keyward/internal/testenv"
	"github.com/keyward/keyward/internal/testserver"
)

// state is what the key is once write seq has returned.
type state struct {
	seq     int64
	current string // the secret in force
	enabled bool
	old     []string // secrets regenerated away: refused forever
}

// TestNoValidateSeesAnOlderState: goroutines validate one key on two
// instances (in-process cache on, Redis shared) while a writer disables,
// enables and regenerates it through either instance. Whenever a Validate
// started after write n returned and no later write had begun by the time it
// answered, the answer must be exactly the state after write n.
func TestNoValidateSeesAnOlderState(t *testing.T) {
	for _, mode := range []struct {
		name           string
		redis, noLocal bool
	}{
		{"redis-and-in-process", true, false},
		{"redis-only", true, true},
		{"store-only", false, true},
	} {
		t.Run(mode.name, func(t *testing.T) {
			dsn, redisAddr := testenv.Postgres(t), ""
			if mode.redis {
				redisAddr = testenv.Redis(t)
			}
			admin, _ := keymat.Generate("live")
			opts := testserver.Options{PostgresDSN: dsn, RedisAddr: redisAddr, RedisNamespace: "race" + randHex(4), AdminKey: admin.String(), NoLocalCache: mode.noLocal}
			raceOneKey(t, testserver.Start(t, opts), testserver.Start(t, opts))
		})
	}
	// The embedded default: one process, SQLite, in-process cache only.
	t.Run("embedded", func(t *testing.T) {
		raceOneKey(t, testserver.Start(t, testserver.Options{}))
	})
}

func raceOneKey(t *testing.T, instances ...*testserver.Server) {
	a := instances[0]
	time.Sleep(300 * time.Millisecond) // let both leases become fresh, so the in-process tier is in play

	ctx := context.Background()
	created, err := a.Client.CreateKey(a.Admin(ctx), &keywardv1.CreateKeyRequest{Key: &keywardv1.Key{DisplayName: "raced"}})
	if err != nil {
		t.Fatal(err)
	}
	id := created.GetKey().GetKeyId()
	var published atomic.Pointer[state]
	published.Store(&state{current: created.GetSecret(), enabled: true})
	var started atomic.Int64 // writes begun

	writes := 240
	if testing.Short() {
		writes = 45
	}
	done := make(chan struct{})
	var checked, violations, validations atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				s := published.Load()
				secret, wantValid := s.current, s.enabled
				if len(s.old) > 0 && i%3 == 0 {
					secret, wantValid = s.old[pick(len(s.old))], false
				}
				srv := instances[pick(len(instances))]
				resp, err := srv.Client.Validate(ctx, &keywardv1.ValidateRequest{Key: secret})
				if err != nil {
					t.Errorf("Validate: %v", err)
					return
				}
				validations.Add(1)
				if started.Load() != s.seq {
					continue // a write began meanwhile: either answer is allowed
				}
				checked.Add(1)
				if resp.GetValid() != wantValid {
					violations.Add(1)
					t.Errorf("after write %d: got valid=%v (%v), want %v", s.seq, resp.GetValid(), resp.GetReason(), wantValid)
				}
			}
		}()
	}

	var took []time.Duration
	for n := int64(1); n <= int64(writes); n++ {
		prev := published.Load()
		next := &state{seq: n, current: prev.current, enabled: prev.enabled, old: prev.old}
		srv := instances[int(n)%len(instances)]
		actx := srv.Admin(ctx)
		started.Store(n)
		t0 := time.Now()
		switch n % 3 {
		case 0:
			r, err := srv.Client.RegenerateKey(actx, &keywardv1.RegenerateKeyRequest{KeyId: id})
			if err != nil {
				t.Fatal(err)
			}
			next.old = append(append([]string(nil), prev.old...), prev.current)
			next.current = r.GetSecret()
		case 1:
			if _, err := srv.Client.DisableKey(actx, &keywardv1.DisableKeyRequest{KeyId: id}); err != nil {
				t.Fatal(err)
			}
			next.enabled = false
		case 2:
			if _, err := srv.Client.EnableKey(actx, &keywardv1.EnableKeyRequest{KeyId: id}); err != nil {
				t.Fatal(err)
			}
			next.enabled = true
		}
		published.Store(next)
		took = append(took, time.Since(t0))
		time.Sleep(20 * time.Millisecond) // give validators a window with no write in flight, even on a loaded machine
	}
	close(done)
	wg.Wait()
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	t.Logf("write latency p50 %v p99 %v max %v", took[len(took)/2], took[len(took)*99/100], took[len(took)-1])
	t.Logf("%d writes, %d validations, %d checked strictly, %d violations", writes, validations.Load(), checked.Load(), violations.Load())
	if checked.Load() < int64(writes) {
		t.Fatalf("only %d strict checks: the test did not exercise the states", checked.Load())
	}
}

func pick(n int) int {
	v, _ := rand.Int(rand.Reader, big.NewInt(int64(n)))
	return int(v.Int64())
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
