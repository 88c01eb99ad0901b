// Write stream workloads (stream-put, stream-noop): each caller is one bidirectional
// MetadataService/Write stream keeping a window of -inflight requests in flight.
//
// Per stream, a sender goroutine takes a free slot of the window, stamps the slot with its send
// time and sends a WriteRequest whose id is the slot number; a receiver goroutine reads the
// answers, takes each latency from its slot's send time (send to answer) and frees the slot. So at
// most -inflight requests of a stream are unanswered, and the ids in flight are distinct even when
// answers come back out of order.
//
// Counting follows the unary callers: a request counts when it was sent at or after the start of
// the window; an answer whose google.rpc.Status code is not 0 counts as an error under that code.
// At stop the sender closes its side and the receiver drains every answer still due (all of them
// count, within the run's deadline). A stream that breaks counts each of its unanswered requests
// as an error under the stream's code (Unknown for an answer that matches no request in flight, or
// a stream that ends with requests unanswered), and the caller opens a new stream unless the run
// is stopping.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// streamRun is what every Write stream caller of one run shares.
type streamRun struct {
	p        *plan
	inflight int
	base     time.Time
	stop     *atomic.Bool
	// windowStart is the start of the measured window in nanoseconds since base; 0 while warming up.
	windowStart *atomic.Int64
}

// caller runs Write streams on cc, one after another, until the run stops.
func (r *streamRun) caller(ctx context.Context, cc *grpc.ClientConn, rng *rand.Rand, t *tally) {
	for !r.stop.Load() && ctx.Err() == nil {
		if err := r.stream(ctx, cc, rng, t); err != nil {
			// Do not spin on a server that is down; the loop still ends on stop.
			time.Sleep(time.Millisecond)
		}
	}
}

func (r *streamRun) measured(sentAt int64) bool {
	ws := r.windowStart.Load()
	return ws != 0 && sentAt >= ws
}

// fail counts one failed request sent at sentAt (nanoseconds since base).
func (r *streamRun) fail(t *tally, sentAt int64, code codes.Code) {
	if r.measured(sentAt) {
		t.errors[code]++
	} else {
		t.warmupErrors++
	}
}

// stream runs one Write stream until the run stops and every answer is in, or the stream breaks.
func (r *streamRun) stream(ctx context.Context, cc *grpc.ClientConn, rng *rand.Rand, t *tally) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := cc.NewStream(sctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, r.p.method)
	if err != nil {
		r.fail(t, int64(time.Since(r.base)), status.Code(err))
		return err
	}
	// sentAt[s] is the send time of the request in slot s (nanoseconds since base, at least 1), or
	// 0 while the slot is free. Written by the sender, cleared by the receiver.
	sentAt := make([]atomic.Int64, r.inflight)
	free := make(chan int, r.inflight)
	for s := range r.inflight {
		free <- s
	}
	var recvErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		recvErr = r.receive(st, sentAt, free, t)
		if recvErr != nil {
			// Unblocks a sender held by flow control.
			cancel()
		}
	}()

send:
	for !r.stop.Load() {
		var s int
		select {
		case s = <-free:
		case <-done:
			break send
		}
		if r.stop.Load() {
			break
		}
		sentAt[s].Store(max(int64(time.Since(r.base)), 1))
		if err := st.SendMsg(writeRequest(uint64(s), r.p.next(rng))); err != nil {
			// Not sent; the receiver gets the stream's status.
			sentAt[s].Store(0)
			break
		}
	}
	_ = st.CloseSend()
	<-done

	unanswered := 0
	for s := range sentAt {
		if at := sentAt[s].Load(); at != 0 {
			unanswered++
			if recvErr == nil {
				recvErr = fmt.Errorf("write stream ended with OK and requests unanswered")
			}
			r.fail(t, at, status.Code(recvErr))
		}
	}
	if recvErr != nil && unanswered == 0 {
		r.fail(t, int64(time.Since(r.base)), status.Code(recvErr))
	}
	if recvErr != nil && status.Code(recvErr) == codes.Unknown {
		fmt.Fprintf(os.Stderr, "loadgen: %v\n", recvErr)
	}
	return recvErr
}

// receive reads answers until the stream ends: nil after the server ends it with OK.
func (r *streamRun) receive(st grpc.ClientStream, sentAt []atomic.Int64, free chan<- int, t *tally) error {
	var a writeAnswer
	for {
		if err := st.RecvMsg(&a); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		now := int64(time.Since(r.base))
		if a.id >= uint64(len(sentAt)) {
			return fmt.Errorf("write stream answered id %d, never sent", a.id)
		}
		start := sentAt[a.id].Swap(0)
		if start == 0 {
			return fmt.Errorf("write stream answered id %d twice", a.id)
		}
		switch measured := r.measured(start); {
		case a.code != 0:
			r.fail(t, start, codes.Code(a.code))
		case measured:
			t.ops++
			t.items += int64(r.p.itemsPerOp)
			t.latencies = append(t.latencies, now-start)
		default:
			t.warmupOps++
		}
		free <- int(a.id)
	}
}
