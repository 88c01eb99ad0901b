package metadataclient

// Watch and the list-then-watch recipe over the generated stubs: Watch ranges over the
// committed changes of a partition (one *metadatav1.WatchResponse per committed sync that changed
// a watched key, in version order), ListWithVersion lists a partition with the version it was
// read at, and OldestAvailableVersion reads the version to resume from out of the OUT_OF_RANGE
// error that ends a watch which cannot go on without a gap:
//
//	version, keys, values, err := metadataclient.ListWithVersion(ctx, client, &metadatav1.KeysRequest{Partition: "p", IncludeValues: true})
//	req := &metadatav1.WatchRequest{Partition: "p", StartVersion: version + 1, IncludeValues: true}
//	for resp, err := range metadataclient.Watch(ctx, client, req) {
//		if err != nil { ... } // OUT_OF_RANGE: list again; UNAVAILABLE: resume from the last version + 1
//		for _, ev := range resp.GetEvents() { ... } // ev.Value == nil: a removal
//	}

import (
	"context"
	"errors"
	"io"
	"iter"
	"regexp"
	"strconv"

	metadatav1 "github.com/commonware-metadata/clients/go/gen/commonware/metadata/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Watch opens a Watch stream and yields each response, or the error that ended the stream (the
// last value yielded). A watch never ends by itself; breaking out of the loop, or cancelling ctx,
// cancels the stream.
func Watch(ctx context.Context, client metadatav1.MetadataServiceClient, req *metadatav1.WatchRequest, opts ...grpc.CallOption) iter.Seq2[*metadatav1.WatchResponse, error] {
	return func(yield func(*metadatav1.WatchResponse, error) bool) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := client.Watch(ctx, req, opts...)
		if err != nil {
			yield(nil, err)
			return
		}
		for {
			resp, err := stream.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = status.Error(codes.Unavailable, "the watch ended without a status")
				}
				yield(nil, err)
				return
			}
			if !yield(resp, nil) {
				return
			}
		}
	}
}

// ListWithVersion lists a partition (every chunk of a Keys stream) and returns the committed
// version it was read at: a Watch from version + 1 sees every later change exactly once.
func ListWithVersion(ctx context.Context, client metadatav1.MetadataServiceClient, req *metadatav1.KeysRequest, opts ...grpc.CallOption) (version uint64, keys, values [][]byte, err error) {
	stream, err := client.Keys(ctx, req, opts...)
	if err != nil {
		return 0, nil, nil, err
	}
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return version, keys, values, nil
		}
		if err != nil {
			return 0, nil, nil, err
		}
		version = chunk.GetVersion()
		keys = append(keys, chunk.GetKeys()...)
		values = append(values, chunk.GetValues()...)
	}
}

var oldestAvailable = regexp.MustCompile(`oldest available version (\d+)`)

// OldestAvailableVersion returns the oldest version the server could still give, from the
// OUT_OF_RANGE error that ended a watch; ok is false for any other error.
func OldestAvailableVersion(err error) (version uint64, ok bool) {
	s, isStatus := status.FromError(err)
	if !isStatus || s.Code() != codes.OutOfRange {
		return 0, false
	}
	match := oldestAvailable.FindStringSubmatch(s.Message())
	if match == nil {
		return 0, false
	}
	version, parseErr := strconv.ParseUint(match[1], 10, 64)
	return version, parseErr == nil
}
