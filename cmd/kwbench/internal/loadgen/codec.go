package loadgen

import (
	"errors"

	"google.golang.org/grpc/mem"
)

// rawMsg is a message already in wire form. As a request it is sent as is;
// as a response its bytes are copied only when keep is set (the sampled
// responses that are decoded and checked), so the hot loop costs no decode.
type rawMsg struct {
	b    []byte
	keep bool
}

// rawCodec passes bytes through. It is forced per call (grpc.ForceCodecV2)
// together with the "proto" content-subtype, so the server sees an ordinary
// application/grpc+proto call and decodes it with its own proto codec.
type rawCodec struct{}

func (rawCodec) Name() string { return "kwbench-raw" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(*rawMsg)
	if !ok {
		return nil, errors.New("kwbench-raw: want *rawMsg")
	}
	return mem.BufferSlice{mem.SliceBuffer(m.b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*rawMsg)
	if !ok {
		return errors.New("kwbench-raw: want *rawMsg")
	}
	if !m.keep {
		m.b = m.b[:0]
		return nil
	}
	m.b = m.b[:0]
	for _, buf := range data {
		m.b = append(m.b, buf.ReadOnlyData()...)
	}
	return nil
}
