package loadgen

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
)

// fake answers valid=true only for the key "good", and counts the keys it saw.
type fake struct {
	keywardv1.UnimplementedKeyServiceServer
	good, bad atomic.Int64
}

func (f *fake) Validate(_ context.Context, req *keywardv1.ValidateRequest) (*keywardv1.ValidateResponse, error) {
	if req.GetKey() == "good" {
		f.good.Add(1)
		return &keywardv1.ValidateResponse{Valid: true}, nil
	}
	f.bad.Add(1)
	return &keywardv1.ValidateResponse{Reason: keywardv1.ValidateResponse_REASON_NOT_FOUND}, nil
}

func serve(t *testing.T) (*fake, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	f := &fake{}
	keywardv1.RegisterKeyServiceServer(srv, f)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return f, lis.Addr().String()
}

func encode(t *testing.T, keys ...string) [][]byte {
	var out [][]byte
	for _, k := range keys {
		b, err := proto.Marshal(&keywardv1.ValidateRequest{Key: k})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func TestRunMeasuresPreEncodedRequests(t *testing.T) {
	f, addr := serve(t)
	cfg := Config{Addr: addr, Requests: encode(t, "good", "good"), Concurrency: []int{1, 4},
		Duration: 200 * time.Millisecond, Warmup: 50 * time.Millisecond, Conns: 2, SampleEvery: 4}
	var rs []Result
	if err := Run(context.Background(), cfg, func(r Result) error { rs = append(rs, r); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 {
		t.Fatalf("%d results, want 2", len(rs))
	}
	for _, r := range rs {
		if r.Requests == 0 || r.RPS <= 0 || r.P50 <= 0 || r.P99 < r.P50 || r.Sampled == 0 || r.Invalid != 0 || r.Errors != 0 {
			t.Errorf("c=%d: %+v", r.Concurrency, r)
		}
	}
	if f.bad.Load() != 0 || f.good.Load() == 0 {
		t.Errorf("server saw %d good and %d bad keys", f.good.Load(), f.bad.Load())
	}
}

func TestPrimingRefusesInvalidAnswers(t *testing.T) {
	_, addr := serve(t)
	cfg := Config{Addr: addr, Requests: encode(t, "good", "unknown"), Concurrency: []int{1},
		Duration: 100 * time.Millisecond, Conns: 1}
	err := Run(context.Background(), cfg, func(Result) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "1 answered not valid") {
		t.Fatalf("Run = %v, want a priming error naming one invalid answer", err)
	}
}

func TestSamplesCatchInvalidAnswers(t *testing.T) {
	_, addr := serve(t)
	cfg := Config{Addr: addr, Requests: encode(t, "unknown"), Concurrency: []int{2},
		Duration: 100 * time.Millisecond, Conns: 1, SampleEvery: 1, SkipPriming: true}
	var rs []Result
	if err := Run(context.Background(), cfg, func(r Result) error { rs = append(rs, r); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 || rs[0].Invalid == 0 || rs[0].Invalid != rs[0].Sampled || !strings.Contains(rs[0].FirstInvalid, "REASON_NOT_FOUND") {
		t.Fatalf("results %+v, want every sampled answer invalid", rs)
	}
}
