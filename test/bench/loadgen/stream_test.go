// Tests of the Write stream client the benchmark's figures rest on: the wire form of requests and
// answers (checked against the generated types and against field numbers written by hand), and
// whole streams against an in-process fake server on 127.0.0.1 that answers out of order, refuses
// some requests and breaks streams, so that the window, the counting and the draining are checked.

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metadatav1 "github.com/commonware-metadata/clients/go/gen/commonware/metadata/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

func TestWriteRequestCarriesIdAndPut(t *testing.T) {
	c := &config{partition: "p", keyBytes: 8, valueBytes: 100, keyspace: 3}
	puts := ourPuts(c, metadatav1.Durability_DURABILITY_DURABLE)
	for _, id := range []uint64{0, 7, 1 << 40} {
		var req metadatav1.WriteRequest
		if err := proto.Unmarshal(writeRequest(id, puts[3]), &req); err != nil {
			t.Fatalf("id %d: %v", id, err)
		}
		var want metadatav1.PutRequest
		if err := proto.Unmarshal(puts[3], &want); err != nil {
			t.Fatal(err)
		}
		if req.GetId() != id || !proto.Equal(req.GetPut(), &want) {
			t.Fatalf("id %d: decoded id %d put %v, want put %v", id, req.GetId(), req.GetPut(), &want)
		}
	}
}

// answer encodes a WriteResponse by field number: id = 1, status = 2 (code = 1, message = 2), and
// put = 3 (an empty PutResponse) when ok.
func answer(id uint64, code codes.Code, message string) []byte {
	var st []byte
	if code != codes.OK {
		st = protowire.AppendTag(st, 1, protowire.VarintType)
		st = protowire.AppendVarint(st, uint64(int64(int32(code))))
		st = protowire.AppendTag(st, 2, protowire.BytesType)
		st = protowire.AppendString(st, message)
	}
	var b []byte
	if id != 0 {
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, id)
	}
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, st)
	if code == codes.OK {
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendBytes(b, nil)
	}
	return b
}

func TestDecodeWriteAnswer(t *testing.T) {
	cases := []struct {
		in   []byte
		id   uint64
		code int32
	}{
		{answer(9, codes.FailedPrecondition, "precondition failed"), 9, 9},
		{answer(0, codes.OK, ""), 0, 0},
		{answer(1<<33, codes.Unavailable, "not committed"), 1 << 33, 14},
		// No status field at all reads as OK.
		{protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 5), 5, 0},
		// Negative int32 codes are sign-extended varints on the wire.
		{answer(2, codes.Code(^uint32(0)), ""), 2, -1},
	}
	for i, tc := range cases {
		a := writeAnswer{id: 77, code: 77}
		if err := decodeWriteAnswer(tc.in, &a); err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if a.id != tc.id || a.code != tc.code {
			t.Fatalf("case %d: got id %d code %d, want id %d code %d", i, a.id, a.code, tc.id, tc.code)
		}
	}
	if err := decodeWriteAnswer([]byte{0x12, 0x05, 0x08}, &writeAnswer{}); err == nil {
		t.Fatal("truncated status decoded without error")
	}
}

// bytesCodec is the fake server's codec: frames in and out as raw bytes.
type bytesCodec struct{}

func (bytesCodec) Name() string { return "proto" }

func (bytesCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}

func (bytesCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*(v.(*[]byte)) = data.Materialize()
	return nil
}

// fakeWrite is a Write stream handler; it records what it saw.
type fakeWrite struct {
	window int
	// refuseEvery: every n-th answer (1-based, over all streams) is FAILED_PRECONDITION.
	refuseEvery int
	// breakAfter, when set, ends each stream with UNAVAILABLE after reading that many requests,
	// answering none.
	breakAfter int

	mu       sync.Mutex
	streams  int
	received int
	answered int
	refused  int
	problems []string
}

func (f *fakeWrite) problem(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.problems = append(f.problems, fmt.Sprintf(format, args...))
}

// handle reads requests; it answers only once `window` of them are unanswered (in reverse order),
// so a stream makes progress only when the client keeps its whole window in flight, and answers
// the rest when the client half-closes.
func (f *fakeWrite) handle(_ any, ss grpc.ServerStream) error {
	f.mu.Lock()
	f.streams++
	f.mu.Unlock()
	var pending []uint64
	inFlight := map[uint64]bool{}
	flush := func() error {
		for i := len(pending) - 1; i >= 0; i-- {
			f.mu.Lock()
			f.answered++
			code := codes.OK
			if f.refuseEvery > 0 && f.answered%f.refuseEvery == 0 {
				code = codes.FailedPrecondition
				f.refused++
			}
			f.mu.Unlock()
			delete(inFlight, pending[i])
			if err := ss.SendMsg(answer(pending[i], code, "refused")); err != nil {
				return err
			}
		}
		pending = pending[:0]
		return nil
	}
	for n := 0; ; n++ {
		var in []byte
		err := ss.RecvMsg(&in)
		if errors.Is(err, io.EOF) {
			if f.breakAfter > 0 {
				return status.Error(codes.Unavailable, "fake server: shutting down")
			}
			return flush()
		}
		if err != nil {
			return err
		}
		var req metadatav1.WriteRequest
		if err := proto.Unmarshal(in, &req); err != nil || req.GetPut() == nil {
			f.problem("request %d does not decode as a WriteRequest with a put: %v", n, err)
		}
		if inFlight[req.GetId()] {
			f.problem("id %d sent again before its answer", req.GetId())
		}
		if req.GetId() >= uint64(f.window) {
			f.problem("id %d outside a window of %d", req.GetId(), f.window)
		}
		inFlight[req.GetId()] = true
		pending = append(pending, req.GetId())
		f.mu.Lock()
		f.received++
		f.mu.Unlock()
		if f.breakAfter > 0 && len(pending) == f.breakAfter {
			return status.Error(codes.Unavailable, "fake server: stream broken")
		}
		if f.breakAfter == 0 && len(pending) == f.window {
			if err := flush(); err != nil {
				return err
			}
		}
	}
}

// startFake serves f on 127.0.0.1 and returns one connection to it through dial (as a run does).
func startFake(t *testing.T, f *fakeWrite) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ForceServerCodecV2(bytesCodec{}))
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "commonware.metadata.v1.MetadataService",
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{
			{StreamName: "Write", Handler: f.handle, ServerStreams: true, ClientStreams: true},
		},
	}, nil)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conns, err := dial(ctx, lis.Addr().String(), 1, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeAll(conns) })
	return conns[0]
}

// runStreams runs `streams` callers for `d` with the window open from the start, and returns
// their tallies once every caller has finished.
func runStreams(t *testing.T, cc *grpc.ClientConn, streams, inflight int, d time.Duration) []*tally {
	t.Helper()
	c := &config{partition: "p", keyBytes: 8, valueBytes: 10, keyspace: 50}
	puts := ourPuts(c, metadatav1.Durability_DURABILITY_DURABLE)
	p := &plan{
		method:     metadatav1.MetadataService_Write_FullMethodName,
		write:      true,
		next:       func(rng *rand.Rand) rawMessage { return puts[rng.IntN(len(puts))] },
		itemsPerOp: 1,
	}
	var stop atomic.Bool
	var windowStart atomic.Int64
	windowStart.Store(1)
	r := &streamRun{p: p, inflight: inflight, base: time.Now(), stop: &stop, windowStart: &windowStart}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tallies := make([]*tally, streams)
	var wg sync.WaitGroup
	for w := range streams {
		tallies[w] = &tally{errors: map[codes.Code]int{}}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.caller(ctx, cc, rand.New(rand.NewPCG(1, uint64(w))), tallies[w])
		}()
	}
	time.Sleep(d)
	stop.Store(true)
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatal("callers did not finish before the deadline: a stream stalled")
	}
	return tallies
}

func TestStreamKeepsItsWindowAndCountsEveryAnswer(t *testing.T) {
	const streams, inflight = 3, 8
	f := &fakeWrite{window: inflight, refuseEvery: 5}
	tallies := runStreams(t, startFake(t, f), streams, inflight, 300*time.Millisecond)

	var ops, items, latencies int
	errs := map[codes.Code]int{}
	for _, tl := range tallies {
		ops += int(tl.ops)
		items += int(tl.items)
		latencies += len(tl.latencies)
		for code, n := range tl.errors {
			errs[code] += n
		}
		if tl.warmupOps != 0 || tl.warmupErrors != 0 {
			t.Fatalf("warm-up counts %d/%d with the window open from the start", tl.warmupOps, tl.warmupErrors)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.problems) > 0 {
		t.Fatalf("server saw: %v", f.problems)
	}
	if f.streams != streams {
		t.Fatalf("%d streams opened, want %d (one each, never broken)", f.streams, streams)
	}
	// Answers only come once a whole window is in flight, so this many means pipelining worked.
	if f.answered < 10*streams*inflight {
		t.Fatalf("only %d answers in 300 ms", f.answered)
	}
	if f.answered != f.received {
		t.Fatalf("server answered %d of %d requests", f.answered, f.received)
	}
	if ops+errs[codes.FailedPrecondition] != f.answered || errs[codes.FailedPrecondition] != f.refused {
		t.Fatalf("client counted %d ok + %v, server answered %d with %d refused", ops, errs, f.answered, f.refused)
	}
	if len(errs) != 1 || items != ops || latencies != ops {
		t.Fatalf("errors %v, items %d, latencies %d for %d ops", errs, items, latencies, ops)
	}
}

func TestBrokenStreamCountsItsUnansweredRequests(t *testing.T) {
	const streams, inflight = 2, 4
	f := &fakeWrite{window: inflight, breakAfter: inflight}
	tallies := runStreams(t, startFake(t, f), streams, inflight, 200*time.Millisecond)

	errs := map[codes.Code]int{}
	for _, tl := range tallies {
		if tl.ops != 0 {
			t.Fatalf("%d ops counted from a server that answers nothing", tl.ops)
		}
		for code, n := range tl.errors {
			errs[code] += n
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.problems) > 0 {
		t.Fatalf("server saw: %v", f.problems)
	}
	if f.streams < 2*streams {
		t.Fatalf("%d streams: a broken stream must be replaced", f.streams)
	}
	// Each unanswered request is one error; a stream that breaks with none in flight (one a caller
	// opens as the run stops) adds one of its own.
	if extra := errs[codes.Unavailable] - f.received; len(errs) != 1 || extra < 0 || extra > streams {
		t.Fatalf("client counted %v, server read %d requests and answered none", errs, f.received)
	}
}
