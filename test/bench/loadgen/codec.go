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

// writeAnswer receives one WriteResponse of a Write stream: the id it answers and the code of its
// google.rpc.Status (WriteResponse field 2, Status field 1; absent means 0, OK).
type writeAnswer struct {
	id   uint64
	code int32
}

// keysCounter receives one KeysResponse chunk of a Keys stream and adds its keys (field 1) to n.
type keysCounter struct {
	n int
}

// putAnswer receives one PutResponse: its version (field 2), the sync that committed the Put (0
// for a buffered one).
type putAnswer struct {
	version uint64
}

// watchMessage receives one WatchResponse: its version (field 1) and how many events (field 2) it
// holds, which are counted, not decoded.
type watchMessage struct {
	version uint64
	events  int
}

// rawCodec implements encoding.CodecV2 for rawMessage requests and sink, keysCounter,
// writeAnswer, putAnswer and watchMessage responses.
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
	case *writeAnswer:
		return decodeWriteAnswer(data.Materialize(), t)
	case *putAnswer:
		v, _, err := scanVersion(data.Materialize(), 2, 0)
		t.version = v
		return err
	case *watchMessage:
		v, n, err := scanVersion(data.Materialize(), 1, 2)
		t.version, t.events = v, n
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

// decodeWriteAnswer reads the id (field 1) and the status code (field 2, its field 1) of a
// WriteResponse, skipping every other field.
func decodeWriteAnswer(b []byte, a *writeAnswer) error {
	a.id, a.code = 0, 0
	for len(b) > 0 {
		num, typ, size := protowire.ConsumeTag(b)
		if size < 0 {
			return protowire.ParseError(size)
		}
		b = b[size:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			a.id, b = v, b[n:]
		case num == 2 && typ == protowire.BytesType:
			status, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			code, err := statusCode(status)
			if err != nil {
				return err
			}
			a.code, b = code, b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
		}
	}
	return nil
}

// statusCode reads field 1 (int32 code) of a google.rpc.Status; 0 when absent.
func statusCode(b []byte) (int32, error) {
	var code int32
	for len(b) > 0 {
		num, typ, size := protowire.ConsumeTag(b)
		if size < 0 {
			return 0, protowire.ParseError(size)
		}
		b = b[size:]
		if num == 1 && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return 0, protowire.ParseError(n)
			}
			// int32 on the wire is the sign-extended 64-bit varint.
			code, b = int32(v), b[n:]
			continue
		}
		n := protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return 0, protowire.ParseError(n)
		}
		b = b[n:]
	}
	return code, nil
}

// scanVersion reads the top-level varint field versionField of the message b (0 when absent) and
// counts the occurrences of countField (none when countField is 0), skipping every other field
// without decoding it.
func scanVersion(b []byte, versionField, countField protowire.Number) (version uint64, count int, err error) {
	for len(b) > 0 {
		num, typ, size := protowire.ConsumeTag(b)
		if size < 0 {
			return 0, 0, protowire.ParseError(size)
		}
		b = b[size:]
		if num == versionField && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return 0, 0, protowire.ParseError(n)
			}
			version, b = v, b[n:]
			continue
		}
		n := protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return 0, 0, protowire.ParseError(n)
		}
		b = b[n:]
		if countField != 0 && num == countField {
			count++
		}
	}
	return version, count, nil
}
