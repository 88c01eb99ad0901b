package metadataclient_test

// Tests of the pipelined Writer (writer.go) over the real server's Write stream (see
// server_test.go): many pipelined puts all answered in order of versions and present after a
// SIGKILL and restart; a failed precondition and bad input answered with their status while
// the stream goes on; Close (answers first, later calls refused); and requests left unanswered
// by a dying server failing with ErrOutcomeUnknown.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	metadataclient "github.com/commonware-metadata/clients/go"
	metadatav1 "github.com/commonware-metadata/clients/go/gen/commonware/metadata/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func newWriter(t *testing.T, s *testServer, options metadataclient.WriterOptions) *metadataclient.Writer {
	t.Helper()
	w, err := metadataclient.NewWriter(ctx(t), s.client, options)
	requireOK(t, err, "NewWriter")
	t.Cleanup(w.Cancel)
	return w
}

func TestWriterPipelinedPutsAreDurable(t *testing.T) {
	s := startServer(t, "", serverFlags...)
	const p = "stream"
	const n = 3000
	w := newWriter(t, s, metadataclient.WriterOptions{Window: 64, Partition: p})
	futures := make([]*metadataclient.Future[*metadatav1.PutResponse], n)
	for i := range n {
		futures[i] = w.Put([]byte(fmt.Sprintf("k%04d", i%1000)), []byte(fmt.Sprintf("v%d", i)))
		if pending := w.Pending(); pending > 64 {
			t.Fatalf("%d requests in flight, window 64", pending)
		}
	}
	var last uint64
	for i, f := range futures {
		reply, err := f.Wait()
		requireOK(t, err, fmt.Sprintf("put %d", i))
		if reply.GetVersion() == 0 || reply.GetVersion() < last {
			t.Fatalf("put %d: version %d after %d; want durable versions in the order sent", i, reply.GetVersion(), last)
		}
		last = reply.GetVersion()
		// Keys repeat every 1000 puts: the previous value is the one put 1000 requests earlier.
		if i >= 1000 && string(reply.GetPrevious()) != fmt.Sprintf("v%d", i-1000) {
			t.Fatalf("put %d: previous %q, want v%d", i, reply.GetPrevious(), i-1000)
		}
	}
	requireOK(t, w.Close(), "Close")

	// Every acknowledged put survives a SIGKILL.
	s.kill()
	s = startServer(t, s.dataDir, serverFlags...)
	listed := keys(t, s, &metadatav1.KeysRequest{Partition: p, IncludeValues: true})
	if len(listed.keys) != 1000 {
		t.Fatalf("after SIGKILL and restart: %d keys, want 1000", len(listed.keys))
	}
	for i, key := range listed.keys {
		want := fmt.Sprintf("v%d", n-1000+i)
		if string(key) != fmt.Sprintf("k%04d", i) || string(listed.values[i]) != want {
			t.Fatalf("after restart: %q = %q, want k%04d = %s", key, listed.values[i], i, want)
		}
	}
	if listed.versions[0] < last {
		t.Fatalf("recovered version %d < last acknowledged %d", listed.versions[0], last)
	}
}

func TestWriterFailuresDoNotEndTheStream(t *testing.T) {
	s := startServer(t, "", serverFlags...)
	const p = "goes-on"
	w := newWriter(t, s, metadataclient.WriterOptions{Partition: p})
	a := []byte("a")

	first := w.Put(a, []byte("1"))
	refused := w.Commit([]*metadatav1.Mutation{put(a, []byte("2"))}, []*metadatav1.Precondition{absent(a)})
	tooBig := w.Put([]byte("b"), make([]byte, maxValueBytes+1))
	badName := w.Put(a, []byte("x"), metadataclient.WithPartition("bad name!"))
	wrongWidth := w.Remove([]byte("short"), metadataclient.WithPartition("fixed8"))
	applied := w.Commit([]*metadatav1.Mutation{put(a, []byte("3")), put([]byte("c"), []byte("C"))}, []*metadatav1.Precondition{valueEquals(a, []byte("1"))})
	last := w.Remove([]byte("c"))

	_, err := first.Wait()
	requireOK(t, err, "first put")
	_, err = refused.Wait()
	requireCode(t, err, codes.FailedPrecondition, "commit with a failed precondition")
	if msg := status.Convert(err).Message(); msg != "precondition failed: key 61 is present" {
		t.Fatalf("precondition message %q", msg)
	}
	_, err = tooBig.Wait()
	requireCode(t, err, codes.InvalidArgument, "oversize value")
	if msg := status.Convert(err).Message(); msg != fmt.Sprintf("value too large: %d bytes > %d", maxValueBytes+1, maxValueBytes) {
		t.Fatalf("oversize message %q", msg)
	}
	_, err = badName.Wait()
	requireCode(t, err, codes.InvalidArgument, "bad partition name")
	_, err = wrongWidth.Wait()
	requireCode(t, err, codes.InvalidArgument, "key of the wrong width")
	if errors.Is(err, metadataclient.ErrOutcomeUnknown) {
		t.Fatalf("a refused request reports an unknown outcome: %v", err)
	}
	commit, err := applied.Wait()
	requireOK(t, err, "commit after the failures")
	removed, err := last.Wait()
	requireOK(t, err, "remove after the failures")
	if string(removed.GetPrevious()) != "C" || removed.GetVersion() < commit.GetVersion() {
		t.Fatalf("remove = %v after commit version %d", removed, commit.GetVersion())
	}
	requireOK(t, w.Close(), "Close")
	requireValue(t, s, p, a, []byte("3"))
	requireAbsent(t, s, p, []byte("b"))
	requireAbsent(t, s, p, []byte("c"))
}

func TestWriterClose(t *testing.T) {
	s := startServer(t, "", serverFlags...)
	const p = "close"
	w := newWriter(t, s, metadataclient.WriterOptions{Partition: p, Window: 8})
	var futures []*metadataclient.Future[*metadatav1.PutResponse]
	for i := range 100 {
		futures = append(futures, w.Put([]byte(fmt.Sprintf("k%d", i)), []byte("v"),
			metadataclient.WithDurability(metadatav1.Durability_DURABILITY_BUFFERED)))
	}
	// Close returns once every request is answered and the stream ended with OK.
	requireOK(t, w.Close(), "Close")
	for i, f := range futures {
		select {
		case <-f.Done():
		default:
			t.Fatalf("put %d unanswered after Close", i)
		}
		reply, err := f.Wait()
		requireOK(t, err, fmt.Sprintf("buffered put %d", i))
		if reply.GetVersion() != 0 {
			t.Fatalf("buffered put %d: version %d, want 0", i, reply.GetVersion())
		}
	}
	select {
	case <-w.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
	_, err := w.Put([]byte("late"), []byte("v")).Wait()
	requireCode(t, err, codes.FailedPrecondition, "put after Close")
	requireOK(t, w.Close(), "second Close")
	_, err = s.client.Sync(ctx(t), &metadatav1.SyncRequest{Partition: p})
	requireOK(t, err, "Sync")
	requireValue(t, s, p, []byte("k99"), []byte("v"))
	requireAbsent(t, s, p, []byte("late"))
}

func TestWriterStreamEndLeavesOutcomeUnknown(t *testing.T) {
	// Durable puts are held back by the batch delay: none is answered before the kill.
	s := startServer(t, "", append(serverFlags, "--batch-max-delay-ms", "30000")...)
	w := newWriter(t, s, metadataclient.WriterOptions{Partition: "held"})
	var futures []*metadataclient.Future[*metadatav1.PutResponse]
	for i := range 10 {
		futures = append(futures, w.Put([]byte(fmt.Sprintf("k%d", i)), []byte("v")))
	}
	// Sent and unanswered (held by the batch delay), or not even read yet: unknown either way.
	s.kill()
	for i, f := range futures {
		_, err := f.Wait()
		if !errors.Is(err, metadataclient.ErrOutcomeUnknown) || status.Code(err) != codes.Unavailable {
			t.Fatalf("put %d after the kill: %v (code %v), want UNAVAILABLE with ErrOutcomeUnknown", i, err, status.Code(err))
		}
		if !strings.HasSuffix(status.Convert(err).Message(), "outcome unknown") {
			t.Fatalf("put %d: message %q", i, status.Convert(err).Message())
		}
	}
	if err := w.Close(); status.Code(err) != codes.Unavailable {
		t.Fatalf("Close after the kill: %v, want UNAVAILABLE", err)
	}
	_, err := w.Put([]byte("late"), []byte("v")).Wait()
	if err == nil || errors.Is(err, metadataclient.ErrOutcomeUnknown) {
		t.Fatalf("put after the stream ended: %v, want a not-sent error", err)
	}
}

func TestWriterCancel(t *testing.T) {
	s := startServer(t, "", append(serverFlags, "--batch-max-delay-ms", "30000")...)
	c, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := metadataclient.NewWriter(c, s.client, metadataclient.WriterOptions{Partition: "cancel"})
	requireOK(t, err, "NewWriter")
	f := w.Put([]byte("k"), []byte("v"))
	w.Cancel()
	_, err = f.Wait()
	if !errors.Is(err, metadataclient.ErrOutcomeUnknown) || status.Code(err) != codes.Canceled {
		t.Fatalf("put after Cancel: %v, want CANCELLED with ErrOutcomeUnknown", err)
	}
}
