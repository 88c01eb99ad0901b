// Writer is a pipelined writer over one Write stream (see the proto's Write): Put, Remove and
// Commit send a request and return at once with a Future settled by the server's answer to that
// request; at most Window requests are in flight, and a call waits for a free slot beyond that.
//
// Promises (the same as the TypeScript writer, clients/ts/metadata-writer.ts):
//   - Requests are sent, and applied by the server, in the order the calls return (calls from
//     one goroutine: the order made), so the versions of their answers never decrease in that
//     order. Answers may arrive out of order; each settles its own Future.
//   - A durable request is answered after the fsync of the sync that holds it, with its version.
//   - A failed request settles with its status error (status.Code gives INVALID_ARGUMENT,
//     FAILED_PRECONDITION, ...) and the stream goes on.
//   - If the stream ends first (server shutdown, broken connection, Cancel, the context's
//     deadline), every request not yet answered fails with the stream's status and
//     errors.Is(err, ErrOutcomeUnknown): it may or may not have been committed, as a unary call
//     whose deadline passed.
//
// Usage:
//
//	w, err := metadataclient.NewWriter(ctx, client, metadataclient.WriterOptions{Window: 256})
//	futures := make([]*metadataclient.Future[*metadatav1.PutResponse], len(keys))
//	for i, key := range keys {
//		futures[i] = w.Put(key, value)
//	}
//	for _, f := range futures {
//		if _, err := f.Wait(); err != nil { ... }   // each put durable once it returns nil
//	}
//	err = w.Close()                                 // half-close, wait for the stream's end

package metadataclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	metadatav1 "github.com/commonware-metadata/clients/go/gen/commonware/metadata/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DefaultWindow is the number of requests in flight of a Writer whose Window is 0.
const DefaultWindow = 256

// ErrOutcomeUnknown is matched (errors.Is) by the error of a request whose stream ended before
// it was answered: it may or may not have been committed.
var ErrOutcomeUnknown = errors.New("outcome unknown")

// outcomeUnknown is the error of a request left unanswered by the end of its stream: a gRPC
// status (for status.Code) that also matches ErrOutcomeUnknown.
type outcomeUnknown struct{ st *status.Status }

func (e *outcomeUnknown) Error() string              { return e.st.Err().Error() }
func (e *outcomeUnknown) GRPCStatus() *status.Status { return e.st }
func (e *outcomeUnknown) Is(target error) bool       { return target == ErrOutcomeUnknown }

// Future is the answer to one request of a Writer, settled once.
type Future[T any] struct {
	done  chan struct{}
	value T
	err   error
}

func newFuture[T any]() *Future[T] { return &Future[T]{done: make(chan struct{})} }

func failedFuture[T any](err error) *Future[T] {
	f := newFuture[T]()
	f.settle(*new(T), err)
	return f
}

func (f *Future[T]) settle(value T, err error) {
	f.value, f.err = value, err
	close(f.done)
}

// Done is closed once the answer is known (for select).
func (f *Future[T]) Done() <-chan struct{} { return f.done }

// Wait blocks until the answer is known and returns it: the response, or the request's status
// error (see the package comment for ErrOutcomeUnknown).
func (f *Future[T]) Wait() (T, error) {
	<-f.done
	return f.value, f.err
}

// WriterOptions configures a Writer; the zero value is valid.
type WriterOptions struct {
	// Window is the most requests sent and not yet answered (DefaultWindow when 0).
	Window int
	// Partition is the default partition of the requests ("" means the server's default).
	Partition string
	// Durability is the default durability of the requests (UNSPECIFIED means DURABLE).
	Durability metadatav1.Durability
}

// RequestOption overrides a WriterOptions default for one request.
type RequestOption func(*requestOptions)

type requestOptions struct {
	partition  string
	durability metadatav1.Durability
}

// WithPartition sends the request to partition name.
func WithPartition(name string) RequestOption {
	return func(o *requestOptions) { o.partition = name }
}

// WithDurability answers the request per d (BUFFERED: once applied, with version 0).
func WithDurability(d metadatav1.Durability) RequestOption {
	return func(o *requestOptions) { o.durability = d }
}

// Writer is a pipelined writer over one Write stream; see the package comment. Its methods are
// safe for concurrent use.
type Writer struct {
	stream   metadatav1.MetadataService_WriteClient
	cancel   context.CancelFunc
	defaults requestOptions
	// slots holds one token per request in flight: a send takes one, an answer returns it.
	slots chan struct{}
	// done is closed when the stream has ended (endErr then says how).
	done chan struct{}

	// sendMu orders sends: ids, SendMsg and CloseSend happen under it, in call order.
	sendMu  sync.Mutex
	nextID  uint64
	closing bool

	mu       sync.Mutex
	inFlight map[uint64]func(*metadatav1.WriteResponse, error)
	ended    bool
	endErr   error
}

// NewWriter opens a Write stream on client. ctx bounds the whole stream: its cancellation or
// deadline ends it (every unanswered request then fails with ErrOutcomeUnknown).
func NewWriter(ctx context.Context, client metadatav1.MetadataServiceClient, options WriterOptions) (*Writer, error) {
	window := options.Window
	if window <= 0 {
		window = DefaultWindow
	}
	ctx, cancel := context.WithCancel(ctx)
	stream, err := client.Write(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	w := &Writer{
		stream:   stream,
		cancel:   cancel,
		defaults: requestOptions{partition: options.Partition, durability: options.Durability},
		slots:    make(chan struct{}, window),
		done:     make(chan struct{}),
		inFlight: make(map[uint64]func(*metadatav1.WriteResponse, error)),
	}
	go w.receive()
	return w, nil
}

func (w *Writer) options(opts []RequestOption) requestOptions {
	o := w.defaults
	for _, opt := range opts {
		opt(&o)
	}
	if o.durability == metadatav1.Durability_DURABILITY_UNSPECIFIED {
		o.durability = metadatav1.Durability_DURABILITY_DURABLE
	}
	return o
}

// Put stores value under key. The Future resolves with the answer (a durable put: after the
// fsync of the sync that holds it, with that version).
func (w *Writer) Put(key, value []byte, opts ...RequestOption) *Future[*metadatav1.PutResponse] {
	o := w.options(opts)
	f := newFuture[*metadatav1.PutResponse]()
	w.send(&metadatav1.WriteRequest{Request: &metadatav1.WriteRequest_Put{Put: &metadatav1.PutRequest{
		Partition: o.partition, Key: key, Value: value, Durability: o.durability,
	}}}, func(r *metadatav1.WriteResponse, err error) { f.settle(r.GetPut(), err) })
	return f
}

// Remove deletes key; the Future resolves with the answer (the previous value, the version).
func (w *Writer) Remove(key []byte, opts ...RequestOption) *Future[*metadatav1.RemoveResponse] {
	o := w.options(opts)
	f := newFuture[*metadatav1.RemoveResponse]()
	w.send(&metadatav1.WriteRequest{Request: &metadatav1.WriteRequest_Remove{Remove: &metadatav1.RemoveRequest{
		Partition: o.partition, Key: key, Durability: o.durability,
	}}}, func(r *metadatav1.WriteResponse, err error) { f.settle(r.GetRemove(), err) })
	return f
}

// Commit applies mutations atomically if every precondition holds (as the unary Commit); a
// precondition that does not hold fails the Future with codes.FailedPrecondition.
func (w *Writer) Commit(mutations []*metadatav1.Mutation, preconditions []*metadatav1.Precondition, opts ...RequestOption) *Future[*metadatav1.CommitResponse] {
	o := w.options(opts)
	f := newFuture[*metadatav1.CommitResponse]()
	w.send(&metadatav1.WriteRequest{Request: &metadatav1.WriteRequest_Commit{Commit: &metadatav1.CommitRequest{
		Partition: o.partition, Mutations: mutations, Preconditions: preconditions, Durability: o.durability,
	}}}, func(r *metadatav1.WriteResponse, err error) { f.settle(r.GetCommit(), err) })
	return f
}

// send waits for a slot in the window, then gives request the next id and sends it; settle is
// called once with its answer or its error.
func (w *Writer) send(request *metadatav1.WriteRequest, settle func(*metadatav1.WriteResponse, error)) {
	select {
	case w.slots <- struct{}{}:
	case <-w.done:
		settle(nil, w.notSent())
		return
	}
	w.sendMu.Lock()
	defer w.sendMu.Unlock()
	if w.closing {
		<-w.slots
		settle(nil, status.Error(codes.FailedPrecondition, "the writer is closed"))
		return
	}
	w.nextID++
	request.Id = w.nextID
	w.mu.Lock()
	if w.ended {
		w.mu.Unlock()
		<-w.slots
		settle(nil, w.notSent())
		return
	}
	// Registered before the send, so that an answer can never arrive unclaimed.
	w.inFlight[request.Id] = settle
	w.mu.Unlock()
	err := w.stream.Send(request)
	if err == nil || errors.Is(err, io.EOF) {
		// io.EOF: the stream is over; receive() gets its status and fails the request.
		return
	}
	// Refused by the client side (e.g. too large to send): never sent, so not committed.
	w.mu.Lock()
	_, unanswered := w.inFlight[request.Id]
	delete(w.inFlight, request.Id)
	w.mu.Unlock()
	if unanswered {
		<-w.slots
		settle(nil, err)
	}
}

// notSent is the error of a request refused because the stream had already ended.
func (w *Writer) notSent() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.endErr == nil {
		// Ended with OK: only after Close.
		return status.Error(codes.FailedPrecondition, "the writer is closed")
	}
	return status.Error(status.Code(w.endErr), "the stream ended before this request was sent: not committed")
}

// receive settles each request with its answer until the stream ends, then fails the rest.
func (w *Writer) receive() {
	for {
		response, err := w.stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			w.end(err)
			return
		}
		w.mu.Lock()
		settle, ok := w.inFlight[response.GetId()]
		delete(w.inFlight, response.GetId())
		w.mu.Unlock()
		if !ok {
			continue
		}
		<-w.slots
		if st := response.GetStatus(); st.GetCode() != int32(codes.OK) {
			settle(nil, status.FromProto(st).Err())
		} else {
			settle(response, nil)
		}
	}
}

// end records the stream's end (nil: ended with OK) and fails every unanswered request.
func (w *Writer) end(err error) {
	w.mu.Lock()
	w.ended = true
	w.endErr = err
	unanswered := w.inFlight
	w.inFlight = nil
	w.mu.Unlock()
	var reason error
	if err == nil {
		reason = &outcomeUnknown{status.New(codes.Unavailable, "the stream ended before this request was answered: outcome unknown")}
	} else {
		st := status.Convert(err)
		reason = &outcomeUnknown{status.New(st.Code(), fmt.Sprintf("%s: outcome unknown", st.Message()))}
	}
	for _, settle := range unanswered {
		settle(nil, reason)
	}
	close(w.done)
	w.cancel()
}

// Pending is the number of requests sent and not yet answered.
func (w *Writer) Pending() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.inFlight)
}

// Close half-closes the stream (later calls fail with codes.FailedPrecondition), waits until
// every request is answered and the server ended the stream, and returns nil if it ended with
// OK, else the stream's status error.
func (w *Writer) Close() error {
	w.sendMu.Lock()
	if !w.closing {
		w.closing = true
		_ = w.stream.CloseSend()
	}
	w.sendMu.Unlock()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.endErr
}

// Cancel ends the stream at once: every request not yet answered fails with ErrOutcomeUnknown.
func (w *Writer) Cancel() {
	w.cancel()
}

// Done is closed once the stream has ended.
func (w *Writer) Done() <-chan struct{} { return w.done }
