package extauthz_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/extauthz"
	"github.com/keyward/keyward/internal/testserver"
)

// benchRequest is an allowed Check as Envoy sends it for a plain GET with
// the key in x-api-key: the shape `make bench` should pre-encode.
func benchRequest(secret string) *authv3.CheckRequest {
	h := map[string]string{
		":authority": "api.example.com", ":method": "GET", ":path": "/orders/42", ":scheme": "http",
		"user-agent": "loadgen", "accept": "*/*", "x-forwarded-proto": "http",
		"x-request-id": "5c1f0a1e-7f3b-4a55-9b0e-1d2c3b4a5f60", "x-api-key": secret,
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: h["x-request-id"], Method: "GET", Headers: h, Path: "/orders/42", Host: "api.example.com",
			Scheme: "http", Protocol: "HTTP/1.1", Size: -1,
		}},
	}}
}

// BenchmarkGRPC compares Check to Validate through a real in-process
// Keyward (production wiring, interceptors included) over loopback gRPC,
// with pre-encoded requests as `make bench` sends them.
func BenchmarkGRPC(b *testing.B) {
	srv := testserver.Start(b, testserver.Options{})
	ctx := context.Background()
	created, err := srv.Client.CreateKey(srv.Admin(ctx), &keywardv1.CreateKeyRequest{Key: &keywardv1.Key{
		DisplayName: "bench", Scopes: []string{"orders:read"},
	}})
	if err != nil {
		b.Fatal(err)
	}
	encode := func(m proto.Message) []byte {
		out, err := proto.Marshal(m)
		if err != nil {
			b.Fatal(err)
		}
		return out
	}
	var conns []*grpc.ClientConn
	for range 4 {
		cc, err := grpc.NewClient(srv.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{}), grpc.CallContentSubtype("proto")))
		if err != nil {
			b.Fatal(err)
		}
		defer cc.Close()
		conns = append(conns, cc)
	}
	for _, m := range []struct {
		name, method string
		req          []byte
	}{
		{"Validate", keywardv1.KeyService_Validate_FullMethodName, encode(&keywardv1.ValidateRequest{Key: created.GetSecret()})},
		{"Check", extauthz.CheckMethod, encode(benchRequest(created.GetSecret()))},
	} {
		b.Run(m.name, func(b *testing.B) {
			var next atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(16) // enough calls in flight to be throughput-bound
			b.RunParallel(func(pb *testing.PB) {
				cc := conns[next.Add(1)%int64(len(conns))]
				req, resp := &raw{b: m.req}, &raw{}
				for pb.Next() {
					if err := cc.Invoke(ctx, m.method, req, resp); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

type raw struct{ b []byte }

type rawCodec struct{}

func (rawCodec) Name() string { return "bench-raw" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(*raw)
	if !ok {
		return nil, errors.New("want *raw")
	}
	return mem.BufferSlice{mem.SliceBuffer(m.b)}, nil
}

func (rawCodec) Unmarshal(_ mem.BufferSlice, v any) error {
	if _, ok := v.(*raw); !ok {
		return errors.New("want *raw")
	}
	return nil
}
