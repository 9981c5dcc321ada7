package main

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/keyward/keyward/cmd/kwbench/internal/hist"
	"github.com/keyward/keyward/cmd/kwbench/internal/loadgen"
	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
)

// disableResult is the DisableKey measurement with several instances running.
type disableResult struct {
	Instances       int
	Keys            int
	Mean, P50, P99  time.Duration
	Max             time.Duration
	Checks          int // Validate calls on the other instances after each DisableKey
	Violations      int // of which answered valid=true
	CheckErrors     int
	FirstCheckError string
	CPU             loadgen.CPU // during the timed DisableKey loop; Server is the three instances
}

// disableBench starts count Keyward instances on the bench database and
// Redis (in-process cache on), creates n keys, validates every key on every
// instance so every cache is warm, then disables the keys one at a time,
// round-robin over the instances, timing each DisableKey. After each one
// returns, the key is validated on every other instance: any valid=true is
// a violation of the revocation contract.
func (e *env) disableBench(ctx context.Context, count, n int) (*disableResult, error) {
	var insts []*instance
	defer func() {
		for _, in := range insts {
			in.p.stopAndReport()
		}
	}()
	for i := range count {
		in, err := e.startKeyward(ctx, fmt.Sprintf("keyward-%d", i+1), "--redis-addr", e.redis)
		if err != nil {
			return nil, err
		}
		insts = append(insts, in)
	}
	clients := make([]keywardv1.KeyServiceClient, count)
	for i, in := range insts {
		if err := waitReady(ctx, in.p, in.grpc, in.http, 60*time.Second); err != nil {
			return nil, err
		}
		cc, err := grpc.NewClient(in.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		defer cc.Close()
		clients[i] = keywardv1.NewKeyServiceClient(cc)
	}
	admin := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+e.admin)
	call := func(parent context.Context) (context.Context, context.CancelFunc) {
		return context.WithTimeout(parent, 10*time.Second)
	}

	type created struct{ id, secret string }
	ks := make([]created, 0, n)
	for i := range n {
		cctx, cancel := call(admin)
		resp, err := clients[i%count].CreateKey(cctx, &keywardv1.CreateKeyRequest{
			Key: &keywardv1.Key{DisplayName: fmt.Sprintf("disable bench %d", i), Environment: "live"},
		})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("create key for DisableKey bench: %w", err)
		}
		ks = append(ks, created{resp.GetKey().GetKeyId(), resp.GetSecret()})
	}
	// Warm every cache, twice: the second round is served from the caches.
	for round := range 2 {
		for _, k := range ks {
			for j, c := range clients {
				cctx, cancel := call(ctx)
				resp, err := c.Validate(cctx, &keywardv1.ValidateRequest{Key: k.secret})
				cancel()
				if err != nil {
					return nil, fmt.Errorf("warm-up Validate on %s: %w", insts[j].p.name, err)
				}
				if !resp.GetValid() {
					return nil, fmt.Errorf("warm-up Validate on %s (round %d): a new key answered valid=false (%s)",
						insts[j].p.name, round+1, resp.GetReason())
				}
			}
		}
	}

	pids := make([]int, len(insts))
	for i, in := range insts {
		pids[i] = in.p.cmd.Process.Pid
	}
	if err := e.waitQuiet(ctx, pids); err != nil {
		return nil, err
	}
	var h hist.Histogram
	r := &disableResult{Instances: count, Keys: n}
	meter := loadgen.StartCPU(pids, e.db.name)
	for i, k := range ks {
		w := i % count
		cctx, cancel := call(admin)
		t0 := time.Now()
		_, err := clients[w].DisableKey(cctx, &keywardv1.DisableKeyRequest{KeyId: k.id})
		lat := time.Since(t0)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("DisableKey on %s: %w", insts[w].p.name, err)
		}
		h.Record(lat)
		for j, c := range clients {
			if j == w {
				continue
			}
			cctx, cancel := call(ctx)
			resp, err := c.Validate(cctx, &keywardv1.ValidateRequest{Key: k.secret})
			cancel()
			r.Checks++
			switch {
			case err != nil:
				if r.CheckErrors == 0 {
					r.FirstCheckError = err.Error()
				}
				r.CheckErrors++
			case resp.GetValid():
				r.Violations++
			}
		}
	}
	r.CPU = meter.Stop()
	r.Mean, r.P50, r.P99, r.Max = h.Mean(), h.Quantile(0.5), h.Quantile(0.99), h.Max()
	return r, nil
}
