// Raw-bytes gRPC codec: requests are protobuf messages encoded once before the run, responses are
// counted instead of decoded, so the client spends its CPU on HTTP/2 and not on (un)marshalling.

package main

import (
	"fmt"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// rawMessage is a protobuf message already in wire format. It is shared by every call that sends
// it and never changed after it is built.
type rawMessage []byte

// sink receives a unary response: it keeps its size and, when wanted, whether a field is present.
type sink struct {
	bytes int
	// field, when non-zero, is the number of a top-level field whose presence is recorded in found.
	field protowire.Number
	found bool
}

// keysCounter receives one KeysResponse chunk of a Keys stream and adds its keys (field 1) to n.
type keysCounter struct {
	n int
}

// rawCodec implements encoding.CodecV2 for rawMessage requests and sink/keysCounter responses.
// Its name is "proto", so the content type on the wire is the usual application/grpc+proto.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(rawMessage)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	// SliceBuffer's Free is a no-op, so gRPC never recycles the shared request bytes.
	return mem.BufferSlice{mem.SliceBuffer(m)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	switch t := v.(type) {
	case *sink:
		t.bytes = data.Len()
		if t.field != 0 {
			t.found = hasField(data.Materialize(), t.field)
		}
		return nil
	case *keysCounter:
		n, err := countField(data.Materialize(), 1)
		t.n += n
		return err
	default:
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
}

// hasField reports whether the top-level field num occurs in the message b.
func hasField(b []byte, num protowire.Number) bool {
	n, err := countField(b, num)
	return err == nil && n > 0
}

// countField counts the occurrences of the top-level field num in the message b.
func countField(b []byte, num protowire.Number) (int, error) {
	count := 0
	for len(b) > 0 {
		n, typ, size := protowire.ConsumeTag(b)
		if size < 0 {
			return count, protowire.ParseError(size)
		}
		b = b[size:]
		size = protowire.ConsumeFieldValue(n, typ, b)
		if size < 0 {
			return count, protowire.ParseError(size)
		}
		b = b[size:]
		if n == num {
			count++
		}
	}
	return count, nil
}
