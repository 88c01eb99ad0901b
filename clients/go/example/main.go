// Command example uses the generated Go client of MetadataService against a running server:
// a Put, a Get, an atomic Commit batch, a Keys listing by prefix, and a Commit whose
// precondition fails (FAILED_PRECONDITION). It can run any number of times on the same data.
//
//	npm start -- --data-dir /tmp/metadata-example --metrics-listen off   # in another terminal
//	cd clients/go && go run ./example -addr 127.0.0.1:50051
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"strings"
	"time"

	metadatav1 "github.com/commonware-metadata/clients/go/gen/commonware/metadata/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:50051", "server address (host:port)")
	partition := flag.String("partition", "example", "partition to use")
	timeout := flag.Duration("timeout", 10*time.Second, "deadline of each call")
	flag.Parse()
	if err := run(*addr, *partition, *timeout); err != nil {
		log.Fatalf("example: %v", err)
	}
}

func run(addr, partition string, timeout time.Duration) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := metadatav1.NewMetadataServiceClient(conn)
	call := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), timeout)
	}

	// Put (durable by default: answered after the fsync).
	ctx, cancel := call()
	putReply, err := client.Put(ctx, &metadatav1.PutRequest{
		Partition: partition, Key: []byte("greeting"), Value: []byte("hello, world"),
	})
	cancel()
	if err != nil {
		return fmt.Errorf("put: %w", err)
	}
	previous := "none"
	if putReply.Previous != nil {
		previous = fmt.Sprintf("%q", putReply.GetPrevious())
	}
	fmt.Printf("put greeting (previous %s) at version %d\n", previous, putReply.GetVersion())

	// Get: Value is nil when the key is absent.
	ctx, cancel = call()
	getReply, err := client.Get(ctx, &metadatav1.GetRequest{Partition: partition, Key: []byte("greeting")})
	cancel()
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	if getReply.Value == nil {
		return errors.New("get: greeting is absent")
	}
	fmt.Printf("get greeting = %q (version %d)\n", getReply.GetValue(), getReply.GetVersion())

	// Commit: puts and removes applied atomically by one sync.
	ctx, cancel = call()
	commitReply, err := client.Commit(ctx, &metadatav1.CommitRequest{
		Partition: partition,
		Mutations: []*metadatav1.Mutation{
			putMutation("user/1", "alice"),
			putMutation("user/2", "bob"),
			putMutation("user/3", "carol"),
			{Kind: &metadatav1.Mutation_Remove_{Remove: &metadatav1.Mutation_Remove{Key: []byte("user/0")}}},
		},
		Preconditions: []*metadatav1.Precondition{
			{Key: []byte("greeting"), Condition: &metadatav1.Precondition_Present{Present: true}},
		},
	})
	cancel()
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	fmt.Printf("commit applied at version %d\n", commitReply.GetVersion())

	// Keys: a server stream of chunks, keys in ascending byte order.
	ctx, cancel = call()
	defer cancel()
	stream, err := client.Keys(ctx, &metadatav1.KeysRequest{
		Partition: partition, Prefix: []byte("user/"), IncludeValues: true,
	})
	if err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	var keys, entries []string
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("keys: %w", err)
		}
		for i, key := range chunk.GetKeys() {
			keys = append(keys, string(key))
			entries = append(entries, fmt.Sprintf("%s=%s", key, chunk.GetValues()[i]))
		}
	}
	fmt.Printf("keys with prefix %q: %s\n", "user/", strings.Join(keys, " "))
	fmt.Printf("entries: %s\n", strings.Join(entries, ", "))

	// A Commit whose precondition does not hold changes nothing: FAILED_PRECONDITION.
	ctx, cancel = call()
	_, err = client.Commit(ctx, &metadatav1.CommitRequest{
		Partition: partition,
		Mutations: []*metadatav1.Mutation{putMutation("greeting", "overwritten")},
		Preconditions: []*metadatav1.Precondition{
			{Key: []byte("greeting"), Condition: &metadatav1.Precondition_Absent{Absent: true}},
		},
	})
	cancel()
	if status.Code(err) != codes.FailedPrecondition {
		return fmt.Errorf("conditional commit: got %v, want FAILED_PRECONDITION", err)
	}
	fmt.Printf("precondition failed as expected: %s\n", status.Convert(err).Message())
	return nil
}

func putMutation(key, value string) *metadatav1.Mutation {
	return &metadatav1.Mutation{Kind: &metadatav1.Mutation_Put_{
		Put: &metadatav1.Mutation_Put{Key: []byte(key), Value: []byte(value)},
	}}
}
