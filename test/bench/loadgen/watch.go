// Watchers of the put workload (-watchers N): what watchers cost the Puts, and how long a commit
// takes to reach them.
//
// Before the warm-up, N MetadataService/Watch streams of the run's partition are opened
// (start_version 0, include_values false) on -watch-conns HTTP/2 connections of their own,
// shared round-robin, so that watcher traffic shares no flow-control window with the callers'.
// Each is open once its first message arrives (the warm-up's Puts make one); the window opens
// only when all are, or the run fails after -warmup + 10 s. From the start of the window each
// watcher records the version and receipt time of every message, and counts messages and events.
//
// Timing a delivery: the Put callers decode PutResponse.version and keep, per version, the latest
// send time and the earliest answer time of the Puts it holds (per caller, merged after the run,
// so the hot path takes no lock). A version is committed after the last of its Puts was sent and
// before the first was answered, so the delay from commit to a watcher's receipt lies between
//
//	lower = receipt - first answer (0 when the watcher was first)  and  upper = receipt - last send
//
// which are reported over every delivery (watcher x version) of a version that a Put sent in the
// window was answered with. A watcher message of a version no Put was answered with is counted as
// unmatched.
//
// After the callers stop, the watchers are given up to -grace (5 s at most) to receive the last
// version answered; a watcher still behind then is counted, not waited for. A watch stream that
// ends before the run cancels it is an error of the run, counted under watch_<its status code>.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	metadatav1 "github.com/commonware-metadata/clients/go/gen/commonware/metadata/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// versionSpan is what one caller saw of the Puts answered with one version: the latest send and
// the earliest answer, in nanoseconds since the run's base.
type versionSpan struct {
	lastSend    int64
	firstAnswer int64
}

// noteVersion adds one Put, sent at sent and answered at answered with version, to spans.
func noteVersion(spans map[uint64]versionSpan, version uint64, sent, answered int64) {
	s, ok := spans[version]
	if !ok {
		spans[version] = versionSpan{lastSend: sent, firstAnswer: answered}
		return
	}
	s.lastSend = max(s.lastSend, sent)
	s.firstAnswer = min(s.firstAnswer, answered)
	spans[version] = s
}

// mergeSpans merges the callers' spans: per version, the latest send and the earliest answer.
func mergeSpans(parts []map[uint64]versionSpan) map[uint64]versionSpan {
	out := make(map[uint64]versionSpan)
	for _, part := range parts {
		for v, s := range part {
			noteVersion(out, v, s.lastSend, s.firstAnswer)
		}
	}
	return out
}

// watchReceipt is one message received by a watcher: its version and receipt time (nanoseconds
// since the run's base).
type watchReceipt struct {
	version uint64
	at      int64
}

// delayBounds returns the lower and upper bounds (nanoseconds) of the delay from commit to receipt
// of every receipt whose version holds a Put sent at or after windowStart (its span's last send),
// and how many receipts had a version no Put was answered with. Receipts of versions holding only
// Puts of the warm-up are left out.
func delayBounds(spans map[uint64]versionSpan, receipts []watchReceipt, windowStart int64) (lower, upper []int64, unmatched int) {
	for _, r := range receipts {
		s, ok := spans[r.version]
		if !ok {
			unmatched++
			continue
		}
		if s.lastSend < windowStart {
			continue
		}
		// The commit precedes every answer: a watcher served before the first answer arrived
		// has a delay of at least 0, not less.
		lower = append(lower, max(r.at-s.firstAnswer, 0))
		upper = append(upper, r.at-s.lastSend)
	}
	return lower, upper, unmatched
}

// watcher is one Watch stream and what it received.
type watcher struct {
	// opened is closed when the first message arrives, at openedAt (nanoseconds since base).
	opened   chan struct{}
	openedAt int64
	// done is closed when the stream has ended (cancelled by the run, or not).
	done chan struct{}
	// lastVersion is the version of the latest message.
	lastVersion atomic.Uint64
	// Written by the stream's goroutine only; read after done.
	receipts []watchReceipt
	messages int64
	events   int64
	// err is the stream's end when the run did not cancel it (io.EOF: ended with OK).
	err error
}

// watchRun is every watcher of one run.
type watchRun struct {
	watchers []*watcher
	cancel   context.CancelFunc
}

// watchResult is the "watch" object of the JSON printed on stdout.
type watchResult struct {
	Watchers int `json:"watchers"`
	Conns    int `json:"conns"`
	// OpenS is when, after the watchers were started, the last one received its first message.
	OpenS    float64 `json:"open_s"`
	Messages int64   `json:"messages"`
	Events   int64   `json:"events"`
	// Deliveries are the messages (from the window on) of a version answered to one of the Puts
	// sent in the window; Unmatched those of a version no Put was answered with.
	Deliveries int `json:"deliveries"`
	Unmatched  int `json:"unmatched"`
	// Versions answered to Puts sent in the window, and the deliveries that would make if every
	// watcher received every one of them.
	Versions           int `json:"versions"`
	ExpectedDeliveries int `json:"expected_deliveries"`
	// DelayLowerUs: receipt - first answer of the version; DelayUpperUs: receipt - last send.
	DelayLowerUs latency `json:"delay_lower_us"`
	DelayUpperUs latency `json:"delay_upper_us"`
	// BehindAtEnd counts watchers that had not received the last version answered when the drain
	// after the window ended.
	BehindAtEnd int `json:"behind_at_end"`
	// EndedEarly counts watch streams that ended before the run cancelled them, by status code.
	EndedEarly map[string]int `json:"ended_early"`
}

// watchRequest is the WatchRequest of every watcher: the whole partition, from the next sync,
// without values.
func watchRequest(c *config) rawMessage {
	return mustMarshal(&metadatav1.WatchRequest{Partition: c.partition})
}

// startWatchers opens n Watch streams, round-robin over conns, each sending req; receipts are
// recorded from windowStart on (nanoseconds since base; 0 while warming up). Every stream ends
// by ctx at the latest.
func startWatchers(ctx context.Context, conns []*grpc.ClientConn, n int, req rawMessage, base time.Time, windowStart *atomic.Int64) *watchRun {
	ctx, cancel := context.WithCancel(ctx)
	r := &watchRun{cancel: cancel}
	for i := range n {
		w := &watcher{opened: make(chan struct{}), done: make(chan struct{})}
		r.watchers = append(r.watchers, w)
		go w.run(ctx, conns[i%len(conns)], req, base, windowStart)
	}
	return r
}

func (w *watcher) run(ctx context.Context, cc *grpc.ClientConn, req rawMessage, base time.Time, windowStart *atomic.Int64) {
	defer close(w.done)
	end := func(err error) {
		// The run's cancel ends every stream with Canceled; any other end is the stream's own.
		if ctx.Err() == nil || status.Code(err) != codes.Canceled {
			w.err = err
		}
	}
	st, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, metadatav1.MetadataService_Watch_FullMethodName)
	if err != nil {
		end(err)
		return
	}
	if err := st.SendMsg(req); err != nil {
		// The stream's status comes with the first receive.
		if !errors.Is(err, io.EOF) {
			end(err)
			return
		}
	}
	if err := st.CloseSend(); err != nil {
		end(err)
		return
	}
	var m watchMessage
	first := true
	for {
		if err := st.RecvMsg(&m); err != nil {
			end(err)
			return
		}
		at := int64(time.Since(base))
		w.lastVersion.Store(m.version)
		if first {
			first = false
			w.openedAt = at
			close(w.opened)
		}
		if ws := windowStart.Load(); ws != 0 && at >= ws {
			w.messages++
			w.events += int64(m.events)
			w.receipts = append(w.receipts, watchReceipt{version: m.version, at: at})
		}
	}
}

// awaitOpen waits until every watcher received its first message, or one ended, or timeout; it
// returns when the last one opened (nanoseconds since base).
func (r *watchRun) awaitOpen(timeout time.Duration) (lastOpenedAt int64, err error) {
	deadline := time.After(timeout)
	open := 0
	for _, w := range r.watchers {
		select {
		case <-w.opened:
			open++
			lastOpenedAt = max(lastOpenedAt, w.openedAt)
		case <-w.done:
			return 0, fmt.Errorf("a watch stream ended before its first message: %v", w.err)
		case <-deadline:
			return 0, fmt.Errorf("%d of %d watchers received nothing within %v", len(r.watchers)-open, len(r.watchers), timeout)
		}
	}
	return lastOpenedAt, nil
}

// drain waits (at most timeout) until every watcher still running received version; it returns
// how many had not.
func (r *watchRun) drain(version uint64, timeout time.Duration) (behind int) {
	deadline := time.Now().Add(timeout)
	for _, w := range r.watchers {
	wait:
		for w.lastVersion.Load() < version && time.Now().Before(deadline) {
			select {
			case <-w.done:
				break wait
			case <-time.After(time.Millisecond):
			}
		}
		if w.lastVersion.Load() < version {
			behind++
		}
	}
	return behind
}

// windowVersions counts the versions answered to at least one Put sent at or after windowStart,
// and returns the highest version answered.
func windowVersions(spans map[uint64]versionSpan, windowStart int64) (count int, last uint64) {
	for v, s := range spans {
		if s.lastSend >= windowStart {
			count++
		}
		last = max(last, v)
	}
	return count, last
}

// stop cancels every stream, waits for each to end, and sums up what they received: deliveries
// of the versions holding Puts sent from windowStart on, windowVersions of them.
func (r *watchRun) stop(spans map[uint64]versionSpan, windowStart int64, windowVersions int, res *watchResult) {
	r.cancel()
	var lower, upper []int64
	res.EndedEarly = map[string]int{}
	for _, w := range r.watchers {
		<-w.done
		res.Messages += w.messages
		res.Events += w.events
		lo, up, unmatched := delayBounds(spans, w.receipts, windowStart)
		lower, upper = append(lower, lo...), append(upper, up...)
		res.Deliveries += len(lo)
		res.Unmatched += unmatched
		if w.err != nil {
			code := status.Code(w.err)
			if errors.Is(w.err, io.EOF) {
				code = codes.OK
			}
			res.EndedEarly[code.String()]++
		}
	}
	res.Versions = windowVersions
	res.ExpectedDeliveries = windowVersions * len(r.watchers)
	res.DelayLowerUs = summarize(lower)
	res.DelayUpperUs = summarize(upper)
}
