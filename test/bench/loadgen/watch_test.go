// Tests of the watchers of the put workload (watch.go): the scanning of PutResponse and
// WatchResponse (checked against the generated types), the bounds of a delivery's delay, and
// whole watchers against an in-process fake Watch server on 127.0.0.1 that sends versions in
// order and ends some streams early, so that opening, recording, draining and the count of
// streams that ended early are checked.

package main

import (
	"context"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	metadatav1 "github.com/commonware-metadata/clients/go/gen/commonware/metadata/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// bufferOf is b as the codec receives it.
func bufferOf(b []byte) mem.BufferSlice { return mem.BufferSlice{mem.SliceBuffer(b)} }

func TestScanPutResponseVersion(t *testing.T) {
	cases := []struct {
		msg  *metadatav1.PutResponse
		want uint64
	}{
		{&metadatav1.PutResponse{Previous: []byte("old value"), Version: 77}, 77},
		{&metadatav1.PutResponse{Version: 1 << 50}, 1 << 50},
		// A new key (no previous) answered buffered: version 0, so nothing at all on the wire.
		{&metadatav1.PutResponse{}, 0},
	}
	for i, tc := range cases {
		b, err := proto.Marshal(tc.msg)
		if err != nil {
			t.Fatal(err)
		}
		a := putAnswer{version: 99}
		if err := (rawCodec{}).Unmarshal(bufferOf(b), &a); err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if a.version != tc.want {
			t.Fatalf("case %d: version %d, want %d", i, a.version, tc.want)
		}
	}
	// The version field truncated in the middle of its varint.
	b, _ := proto.Marshal(&metadatav1.PutResponse{Version: 1 << 40})
	if err := (rawCodec{}).Unmarshal(bufferOf(b[:len(b)-1]), &putAnswer{}); err == nil {
		t.Fatal("truncated PutResponse decoded without error")
	}
}

func TestScanWatchResponse(t *testing.T) {
	removal := &metadatav1.WatchEvent{Key: []byte("gone")}
	put := &metadatav1.WatchEvent{Key: []byte("k"), Value: []byte{}}
	withValue := &metadatav1.WatchEvent{Key: []byte("v"), Value: []byte("value")}
	cases := []struct {
		msg     *metadatav1.WatchResponse
		version uint64
		events  int
	}{
		{&metadatav1.WatchResponse{Version: 9, Events: []*metadatav1.WatchEvent{removal, put, withValue}}, 9, 3},
		{&metadatav1.WatchResponse{Version: 1 << 33, Events: []*metadatav1.WatchEvent{put}}, 1 << 33, 1},
		{&metadatav1.WatchResponse{Version: 4}, 4, 0},
	}
	for i, tc := range cases {
		b, err := proto.Marshal(tc.msg)
		if err != nil {
			t.Fatal(err)
		}
		m := watchMessage{version: 1, events: 5}
		if err := (rawCodec{}).Unmarshal(bufferOf(b), &m); err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if m.version != tc.version || m.events != tc.events {
			t.Fatalf("case %d: version %d events %d, want %d and %d", i, m.version, m.events, tc.version, tc.events)
		}
	}
	b, _ := proto.Marshal(&metadatav1.WatchResponse{Version: 3, Events: []*metadatav1.WatchEvent{withValue}})
	if err := (rawCodec{}).Unmarshal(bufferOf(b[:len(b)-2]), &watchMessage{}); err == nil {
		t.Fatal("truncated WatchResponse decoded without error")
	}
}

func TestDelayBounds(t *testing.T) {
	// Two callers: version 5 held Puts sent at 100 and 140 (caller A) and 120 (caller B), answered
	// at 300, 260 and 280; version 6 one Put sent at 310, answered at 400; version 2 only Puts of
	// the warm-up (sent before the window opened at 50).
	a := map[uint64]versionSpan{}
	noteVersion(a, 5, 100, 300)
	noteVersion(a, 5, 140, 260)
	noteVersion(a, 2, 10, 40)
	b := map[uint64]versionSpan{}
	noteVersion(b, 5, 120, 280)
	noteVersion(b, 6, 310, 400)
	spans := mergeSpans([]map[uint64]versionSpan{a, b})
	want := map[uint64]versionSpan{5: {lastSend: 140, firstAnswer: 260}, 6: {lastSend: 310, firstAnswer: 400}, 2: {lastSend: 10, firstAnswer: 40}}
	if len(spans) != len(want) {
		t.Fatalf("merged %v, want %v", spans, want)
	}
	for v, s := range want {
		if spans[v] != s {
			t.Fatalf("version %d: merged %+v, want %+v", v, spans[v], s)
		}
	}

	receipts := []watchReceipt{
		{version: 2, at: 60},  // warm-up only: left out
		{version: 5, at: 250}, // before the first answer: the lower bound is 0
		{version: 5, at: 290},
		{version: 6, at: 450},
		{version: 7, at: 500}, // no Put was answered with 7
	}
	lower, upper, unmatched := delayBounds(spans, receipts, 50)
	if !slices.Equal(lower, []int64{0, 30, 50}) || !slices.Equal(upper, []int64{110, 150, 140}) || unmatched != 1 {
		t.Fatalf("lower %v upper %v unmatched %d", lower, upper, unmatched)
	}
	for i := range lower {
		if lower[i] > upper[i] {
			t.Fatalf("delivery %d: lower bound %d above upper bound %d", i, lower[i], upper[i])
		}
	}

	count, last := windowVersions(spans, 50)
	if count != 2 || last != 6 {
		t.Fatalf("window versions %d, last %d; want 2 and 6", count, last)
	}
}

// fakeWatch is a Watch handler: each stream reads its request, then sends versions 1..versions
// one every interval (after version 1, once release is closed, when set), and then, for the streams numbered in endEarly (0-based, in the order they
// were opened), ends with OUT_OF_RANGE, while the others wait until the client cancels.
type fakeWatch struct {
	versions int
	interval time.Duration
	endEarly map[int64]bool
	release  chan struct{}
	opened   atomic.Int64
	badReqs  atomic.Int64
}

func (f *fakeWatch) handle(_ any, ss grpc.ServerStream) error {
	n := f.opened.Add(1) - 1
	var in []byte
	if err := ss.RecvMsg(&in); err != nil {
		return err
	}
	var req metadatav1.WatchRequest
	if err := proto.Unmarshal(in, &req); err != nil || req.GetPartition() != "p" || req.GetStartVersion() != 0 || req.GetIncludeValues() {
		f.badReqs.Add(1)
	}
	event := &metadatav1.WatchEvent{Key: []byte("k"), Value: []byte{}}
	for v := 1; v <= f.versions; v++ {
		msg, _ := proto.Marshal(&metadatav1.WatchResponse{Version: uint64(v), Events: []*metadatav1.WatchEvent{event, event}})
		if err := ss.SendMsg(msg); err != nil {
			return err
		}
		if v == 1 && f.release != nil {
			select {
			case <-f.release:
			case <-ss.Context().Done():
				return nil
			}
		}
		time.Sleep(f.interval)
	}
	if f.endEarly[n] {
		return status.Error(codes.OutOfRange, "behind: oldest available version 3")
	}
	<-ss.Context().Done()
	return nil
}

func startFakeWatch(t *testing.T, f *fakeWatch, conns int) []*grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ForceServerCodecV2(bytesCodec{}))
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "commonware.metadata.v1.MetadataService",
		HandlerType: (*any)(nil),
		Streams:     []grpc.StreamDesc{{StreamName: "Watch", Handler: f.handle, ServerStreams: true}},
	}, nil)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cc, err := dial(ctx, lis.Addr().String(), conns, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeAll(cc) })
	return cc
}

func TestWatchersRecordEveryVersionAndReportStreamsEndedEarly(t *testing.T) {
	const watchers, versions = 6, 20
	f := &fakeWatch{versions: versions, interval: time.Millisecond, endEarly: map[int64]bool{1: true, 4: true}, release: make(chan struct{})}
	conns := startFakeWatch(t, f, 2)
	c := &config{partition: "p"}
	base := time.Now()
	var windowStart atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r := startWatchers(ctx, conns, watchers, watchRequest(c), base, &windowStart)
	if _, err := r.awaitOpen(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	// The window opens after the first message of each: only the later ones are recorded.
	windowStart.Store(max(int64(time.Since(base)), 1))
	close(f.release)
	if behind := r.drain(versions, 10*time.Second); behind != 0 {
		t.Fatalf("%d watchers behind after a drain to the last version sent", behind)
	}
	// Streams 1 and 4 end by themselves once they sent the last version.
	ended := 0
	for deadline := time.Now().Add(10 * time.Second); ended < 2 && time.Now().Before(deadline); {
		ended = 0
		for _, w := range r.watchers {
			select {
			case <-w.done:
				ended++
			default:
			}
		}
		time.Sleep(time.Millisecond)
	}
	// Every version was answered to a Put sent in the window (at 1), before any receipt.
	spans := map[uint64]versionSpan{}
	for v := uint64(1); v <= versions; v++ {
		noteVersion(spans, v, 1, 1)
	}
	res := &watchResult{}
	r.stop(spans, 1, versions, res)

	if n := f.badReqs.Load(); n != 0 {
		t.Fatalf("%d Watch requests were not of partition p from version 0 without values", n)
	}
	if f.opened.Load() != watchers {
		t.Fatalf("%d streams opened, want %d", f.opened.Load(), watchers)
	}
	// Streams 1 and 4 ended with OUT_OF_RANGE before the run cancelled them; the others were
	// cancelled by the run, which is not an error.
	if len(res.EndedEarly) != 1 || res.EndedEarly[codes.OutOfRange.String()] != 2 {
		t.Fatalf("ended early %v, want OutOfRange=2", res.EndedEarly)
	}
	if res.Deliveries != int(res.Messages) || res.Unmatched != 0 || res.Events != 2*res.Messages {
		t.Fatalf("deliveries %d unmatched %d messages %d events %d", res.Deliveries, res.Unmatched, res.Messages, res.Events)
	}
	// Each watcher received every version and recorded all but the first, sent before the window.
	if res.Messages != watchers*(versions-1) {
		t.Fatalf("%d messages recorded by %d watchers of %d versions", res.Messages, watchers, versions)
	}
	for _, w := range r.watchers {
		if !slices.IsSortedFunc(w.receipts, func(a, b watchReceipt) int { return int(a.version) - int(b.version) }) {
			t.Fatalf("receipts out of order: %v", w.receipts)
		}
		if last := w.receipts[len(w.receipts)-1].version; last != versions {
			t.Fatalf("a watcher's last receipt is version %d, want %d", last, versions)
		}
	}
	if res.DelayLowerUs.Max > res.DelayUpperUs.Max || res.DelayUpperUs.P50 <= 0 {
		t.Fatalf("delay bounds lower %+v upper %+v", res.DelayLowerUs, res.DelayUpperUs)
	}
}

func TestAwaitOpenFailsWhenAWatcherGetsNothing(t *testing.T) {
	f := &fakeWatch{versions: 0}
	conns := startFakeWatch(t, f, 1)
	var windowStart atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := startWatchers(ctx, conns, 3, watchRequest(&config{partition: "p"}), time.Now(), &windowStart)
	started := time.Now()
	if _, err := r.awaitOpen(200 * time.Millisecond); err == nil {
		t.Fatal("watchers that never received a message were taken as open")
	}
	if elapsed := time.Since(started); elapsed > 2*time.Second {
		t.Fatalf("awaitOpen took %v past its 200 ms timeout", elapsed)
	}
	r.stop(map[uint64]versionSpan{}, 1, 0, &watchResult{})
}
