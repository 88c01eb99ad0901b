package metadataclient_test

// End-to-end tests of the generated Go client against the real server (see server_test.go):
// Put/Get/Remove, Keys (streamed in several chunks, ascending order, prefix/start/end/limit),
// Commit (atomic batches, preconditions -> FAILED_PRECONDITION), the status codes of bad input,
// durability across a SIGTERM restart, and the example program of the README.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	metadatav1 "github.com/commonware-metadata/clients/go/gen/commonware/metadata/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const maxValueBytes = 4096

// serverFlags are the flags every test server gets: a fixed:8 partition, a small value limit
// (to test the boundary cheaply) and a short flush interval (buffered writes commit quickly).
var serverFlags = []string{
	"--partition-key-codec", "fixed8=fixed:8",
	"--max-value-bytes", fmt.Sprint(maxValueBytes),
	"--flush-interval-ms", "20",
}

func requireCode(t *testing.T, err error, want codes.Code, what string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: succeeded, want %v", what, want)
	}
	if got := status.Code(err); got != want {
		t.Fatalf("%s: code %v (%v), want %v", what, got, err, want)
	}
}

func requireOK(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func put(key, value []byte) *metadatav1.Mutation {
	return &metadatav1.Mutation{Kind: &metadatav1.Mutation_Put_{Put: &metadatav1.Mutation_Put{Key: key, Value: value}}}
}

func remove(key []byte) *metadatav1.Mutation {
	return &metadatav1.Mutation{Kind: &metadatav1.Mutation_Remove_{Remove: &metadatav1.Mutation_Remove{Key: key}}}
}

func absent(key []byte) *metadatav1.Precondition {
	return &metadatav1.Precondition{Key: key, Condition: &metadatav1.Precondition_Absent{Absent: true}}
}

func present(key []byte) *metadatav1.Precondition {
	return &metadatav1.Precondition{Key: key, Condition: &metadatav1.Precondition_Present{Present: true}}
}

func valueEquals(key, value []byte) *metadatav1.Precondition {
	return &metadatav1.Precondition{Key: key, Condition: &metadatav1.Precondition_ValueEquals{ValueEquals: value}}
}

// get returns the committed value of key (nil, false when absent).
func get(t *testing.T, s *testServer, partition string, key []byte) ([]byte, bool) {
	t.Helper()
	reply, err := s.client.Get(ctx(t), &metadatav1.GetRequest{Partition: partition, Key: key})
	requireOK(t, err, fmt.Sprintf("Get %s/%q", partition, key))
	return reply.GetValue(), reply.Value != nil
}

func requireValue(t *testing.T, s *testServer, partition string, key, want []byte) {
	t.Helper()
	got, ok := get(t, s, partition, key)
	if !ok {
		t.Fatalf("Get %s/%q: absent, want %q", partition, key, want)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Get %s/%q = %q, want %q", partition, key, got, want)
	}
}

func requireAbsent(t *testing.T, s *testServer, partition string, key []byte) {
	t.Helper()
	if got, ok := get(t, s, partition, key); ok {
		t.Fatalf("Get %s/%q = %q, want absent", partition, key, got)
	}
}

// listing is the result of one Keys stream.
type listing struct {
	keys, values [][]byte
	chunks       int
	versions     []uint64
}

func keys(t *testing.T, s *testServer, req *metadatav1.KeysRequest) listing {
	t.Helper()
	stream, err := s.client.Keys(ctx(t), req)
	requireOK(t, err, "Keys")
	var out listing
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		requireOK(t, err, "Keys Recv")
		out.chunks++
		out.versions = append(out.versions, chunk.GetVersion())
		if req.GetIncludeValues() && len(chunk.GetValues()) != len(chunk.GetKeys()) {
			t.Fatalf("Keys chunk has %d keys and %d values", len(chunk.GetKeys()), len(chunk.GetValues()))
		}
		if !req.GetIncludeValues() && len(chunk.GetValues()) != 0 {
			t.Fatalf("Keys chunk has %d values without include_values", len(chunk.GetValues()))
		}
		out.keys = append(out.keys, chunk.GetKeys()...)
		out.values = append(out.values, chunk.GetValues()...)
	}
}

// keysErr returns the error of a Keys stream that is expected to fail.
func keysErr(t *testing.T, s *testServer, req *metadatav1.KeysRequest) error {
	t.Helper()
	stream, err := s.client.Keys(ctx(t), req)
	if err != nil {
		return err
	}
	for {
		if _, err := stream.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func partitions(t *testing.T, s *testServer) []string {
	t.Helper()
	reply, err := s.client.ListPartitions(ctx(t), &metadatav1.ListPartitionsRequest{})
	requireOK(t, err, "ListPartitions")
	return reply.GetPartitions()
}

func u64(n uint64) []byte {
	var b [8]byte
	for i := 7; i >= 0; i-- {
		b[i] = byte(n)
		n >>= 8
	}
	return b[:]
}

func TestPutGetRemove(t *testing.T) {
	s := startServer(t, "", serverFlags...)
	const p = "kv"
	k := []byte("greeting")

	if reply, err := s.client.Get(ctx(t), &metadatav1.GetRequest{Partition: p, Key: k}); err != nil || reply.Value != nil || reply.GetVersion() != 0 {
		t.Fatalf("Get of a partition that does not exist = %v, %v; want absent at version 0", reply, err)
	}
	if slices.Contains(partitions(t, s), p) {
		t.Fatalf("a Get created partition %q", p)
	}

	first, err := s.client.Put(ctx(t), &metadatav1.PutRequest{Partition: p, Key: k, Value: []byte("hello")})
	requireOK(t, err, "Put")
	if first.Previous != nil || first.GetVersion() == 0 {
		t.Fatalf("first Put = %v; want no previous and a synced version", first)
	}
	got, err := s.client.Get(ctx(t), &metadatav1.GetRequest{Partition: p, Key: k})
	requireOK(t, err, "Get")
	if string(got.GetValue()) != "hello" || got.GetVersion() < first.GetVersion() {
		t.Fatalf("Get = %v; want hello at version >= %d", got, first.GetVersion())
	}

	second, err := s.client.Put(ctx(t), &metadatav1.PutRequest{
		Partition: p, Key: k, Value: []byte("world"), Durability: metadatav1.Durability_DURABILITY_DURABLE,
	})
	requireOK(t, err, "Put again")
	if string(second.GetPrevious()) != "hello" || second.GetVersion() <= first.GetVersion() {
		t.Fatalf("second Put = %v; want previous hello and a version > %d", second, first.GetVersion())
	}
	requireValue(t, s, p, k, []byte("world"))

	// An empty value is a value: present, and distinct from absent.
	empty := []byte("empty")
	_, err = s.client.Put(ctx(t), &metadatav1.PutRequest{Partition: p, Key: empty, Value: nil})
	requireOK(t, err, "Put empty value")
	requireValue(t, s, p, empty, []byte{})

	removed, err := s.client.Remove(ctx(t), &metadatav1.RemoveRequest{Partition: p, Key: k})
	requireOK(t, err, "Remove")
	if string(removed.GetPrevious()) != "world" || removed.GetVersion() <= second.GetVersion() {
		t.Fatalf("Remove = %v; want previous world and a version > %d", removed, second.GetVersion())
	}
	requireAbsent(t, s, p, k)
	again, err := s.client.Remove(ctx(t), &metadatav1.RemoveRequest{Partition: p, Key: k})
	requireOK(t, err, "Remove again")
	if again.Previous != nil {
		t.Fatalf("Remove of an absent key = %v; want no previous", again)
	}

	// A buffered write is answered at version 0 and committed by the next sync.
	buffered, err := s.client.Put(ctx(t), &metadatav1.PutRequest{
		Partition: p, Key: []byte("buffered"), Value: []byte("later"), Durability: metadatav1.Durability_DURABILITY_BUFFERED,
	})
	requireOK(t, err, "buffered Put")
	if buffered.GetVersion() != 0 {
		t.Fatalf("buffered Put version = %d, want 0", buffered.GetVersion())
	}
	synced, err := s.client.Sync(ctx(t), &metadatav1.SyncRequest{Partition: p})
	requireOK(t, err, "Sync")
	if synced.GetVersion() <= removed.GetVersion() {
		t.Fatalf("Sync version = %d, want > %d", synced.GetVersion(), removed.GetVersion())
	}
	requireValue(t, s, p, []byte("buffered"), []byte("later"))

	// The empty partition name is the server's default partition ("default").
	_, err = s.client.Put(ctx(t), &metadatav1.PutRequest{Key: []byte("d"), Value: []byte("1")})
	requireOK(t, err, "Put to the default partition")
	requireValue(t, s, "default", []byte("d"), []byte("1"))

	if got := partitions(t, s); !slices.Contains(got, p) || !slices.Contains(got, "default") || !slices.IsSorted(got) {
		t.Fatalf("ListPartitions = %v; want sorted, with %q and default", got, p)
	}
}

func TestKeys(t *testing.T) {
	s := startServer(t, "", serverFlags...)
	const p = "listing"

	// 2,500 keys under "item/" and 3 under "other/", written in random order in one batch: more
	// than one Keys chunk (the server sends at most 1,000 keys per message).
	want := map[string]string{}
	var batch []*metadatav1.Mutation
	for i := 0; i < 2500; i++ {
		want[fmt.Sprintf("item/%05d", i)] = fmt.Sprintf("value %d", i)
	}
	for _, k := range []string{"other/a", "other/b", "other/c"} {
		want[k] = "v-" + k
	}
	rng := rand.New(rand.NewSource(1))
	order := make([]string, 0, len(want))
	for k := range want {
		order = append(order, k)
	}
	slices.Sort(order)
	rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	for _, k := range order {
		batch = append(batch, put([]byte(k), []byte(want[k])))
	}
	committed, err := s.client.Commit(ctx(t), &metadatav1.CommitRequest{Partition: p, Mutations: batch})
	requireOK(t, err, "Commit")

	sorted := make([]string, 0, len(want))
	for k := range want {
		sorted = append(sorted, k)
	}
	slices.Sort(sorted)

	all := keys(t, s, &metadatav1.KeysRequest{Partition: p, IncludeValues: true})
	if all.chunks < 3 {
		t.Fatalf("Keys of %d keys came in %d chunks, want >= 3", len(want), all.chunks)
	}
	for _, v := range all.versions {
		if v != all.versions[0] || v < committed.GetVersion() {
			t.Fatalf("chunk versions %v: want one version >= %d", all.versions, committed.GetVersion())
		}
	}
	if len(all.keys) != len(sorted) {
		t.Fatalf("Keys listed %d keys, want %d", len(all.keys), len(sorted))
	}
	for i, k := range all.keys {
		if i > 0 && bytes.Compare(all.keys[i-1], k) >= 0 {
			t.Fatalf("Keys not strictly ascending at %d: %q then %q", i, all.keys[i-1], k)
		}
		if string(k) != sorted[i] || string(all.values[i]) != want[sorted[i]] {
			t.Fatalf("entry %d = %q=%q, want %q=%q", i, k, all.values[i], sorted[i], want[sorted[i]])
		}
	}

	names := func(l listing) []string {
		out := make([]string, len(l.keys))
		for i, k := range l.keys {
			out[i] = string(k)
		}
		return out
	}
	checks := []struct {
		name string
		req  *metadatav1.KeysRequest
		want []string
	}{
		{"prefix", &metadatav1.KeysRequest{Prefix: []byte("other/")}, []string{"other/a", "other/b", "other/c"}},
		{"prefix without match", &metadatav1.KeysRequest{Prefix: []byte("nothing")}, []string{}},
		{"start and end", &metadatav1.KeysRequest{Start: []byte("item/00998"), End: []byte("item/01001")},
			[]string{"item/00998", "item/00999", "item/01000"}},
		{"prefix and start", &metadatav1.KeysRequest{Prefix: []byte("other/"), Start: []byte("other/b")}, []string{"other/b", "other/c"}},
		{"limit", &metadatav1.KeysRequest{Prefix: []byte("item/"), Limit: 2}, []string{"item/00000", "item/00001"}},
		{"start after end", &metadatav1.KeysRequest{Start: []byte("other/"), End: []byte("item/")}, []string{}},
	}
	for _, c := range checks {
		c.req.Partition = p
		if got := names(keys(t, s, c.req)); !slices.Equal(got, c.want) {
			t.Fatalf("Keys %s = %v, want %v", c.name, got, c.want)
		}
	}

	// A limit that ends inside the second chunk.
	if got := names(keys(t, s, &metadatav1.KeysRequest{Partition: p, Limit: 1500})); !slices.Equal(got, sorted[:1500]) {
		t.Fatalf("Keys limit 1500 listed %d keys (%v ... )", len(got), got[:min(3, len(got))])
	}

	// Keys of a partition that does not exist: an empty listing, and nothing is created.
	if got := keys(t, s, &metadatav1.KeysRequest{Partition: "nowhere"}); len(got.keys) != 0 {
		t.Fatalf("Keys of a missing partition = %v", names(got))
	}
	if slices.Contains(partitions(t, s), "nowhere") {
		t.Fatal("Keys created a partition")
	}

	// Removing keys shows in the next listing.
	_, err = s.client.Remove(ctx(t), &metadatav1.RemoveRequest{Partition: p, Key: []byte("other/b")})
	requireOK(t, err, "Remove")
	if got := names(keys(t, s, &metadatav1.KeysRequest{Partition: p, Prefix: []byte("other/")})); !slices.Equal(got, []string{"other/a", "other/c"}) {
		t.Fatalf("Keys after Remove = %v", got)
	}
}

func TestCommit(t *testing.T) {
	s := startServer(t, "", serverFlags...)
	const p = "batch"
	a, b, c := []byte("a"), []byte("b"), []byte("c")

	first, err := s.client.Commit(ctx(t), &metadatav1.CommitRequest{
		Partition:     p,
		Mutations:     []*metadatav1.Mutation{put(a, []byte("1")), put(b, []byte("2")), put(c, []byte("3")), remove(c), put(a, []byte("1b"))},
		Preconditions: []*metadatav1.Precondition{absent(a), absent(b)},
	})
	requireOK(t, err, "Commit")
	if first.GetVersion() == 0 {
		t.Fatal("durable Commit answered at version 0")
	}
	requireValue(t, s, p, a, []byte("1b")) // a later mutation of the same key wins
	requireValue(t, s, p, b, []byte("2"))
	requireAbsent(t, s, p, c)

	// Each failing precondition fails the whole batch with FAILED_PRECONDITION, changing nothing.
	failing := []struct {
		name string
		pre  *metadatav1.Precondition
	}{
		{"absent on a present key", absent(a)},
		{"present on an absent key", present(c)},
		{"value_equals with another value", valueEquals(b, []byte("other"))},
		{"value_equals on an absent key", valueEquals(c, []byte("3"))},
	}
	for _, f := range failing {
		_, err := s.client.Commit(ctx(t), &metadatav1.CommitRequest{
			Partition:     p,
			Mutations:     []*metadatav1.Mutation{put(a, []byte("changed")), remove(b), put([]byte("new"), []byte("x"))},
			Preconditions: []*metadatav1.Precondition{present(a), f.pre},
		})
		requireCode(t, err, codes.FailedPrecondition, "Commit with "+f.name)
		requireValue(t, s, p, a, []byte("1b"))
		requireValue(t, s, p, b, []byte("2"))
		requireAbsent(t, s, p, []byte("new"))
	}

	// Compare-and-set: value_equals with the current value applies.
	cas, err := s.client.Commit(ctx(t), &metadatav1.CommitRequest{
		Partition:     p,
		Mutations:     []*metadatav1.Mutation{put(b, []byte("2b")), remove(a)},
		Preconditions: []*metadatav1.Precondition{valueEquals(b, []byte("2")), present(a), absent(c)},
	})
	requireOK(t, err, "compare-and-set Commit")
	if cas.GetVersion() <= first.GetVersion() {
		t.Fatalf("Commit version %d, want > %d", cas.GetVersion(), first.GetVersion())
	}
	requireValue(t, s, p, b, []byte("2b"))
	requireAbsent(t, s, p, a)

	// The stale compare-and-set now fails.
	_, err = s.client.Commit(ctx(t), &metadatav1.CommitRequest{
		Partition:     p,
		Mutations:     []*metadatav1.Mutation{put(b, []byte("2c"))},
		Preconditions: []*metadatav1.Precondition{valueEquals(b, []byte("2"))},
	})
	requireCode(t, err, codes.FailedPrecondition, "stale compare-and-set")
	requireValue(t, s, p, b, []byte("2b"))

	// A batch on a fixed:8 partition.
	_, err = s.client.Commit(ctx(t), &metadatav1.CommitRequest{
		Partition: "fixed8",
		Mutations: []*metadatav1.Mutation{put(u64(1), []byte("one")), put(u64(2), []byte("two"))},
	})
	requireOK(t, err, "Commit on fixed8")
	got := keys(t, s, &metadatav1.KeysRequest{Partition: "fixed8", IncludeValues: true})
	if len(got.keys) != 2 || !bytes.Equal(got.keys[0], u64(1)) || string(got.values[1]) != "two" {
		t.Fatalf("fixed8 listing = %q %q", got.keys, got.values)
	}
}

func TestBadInput(t *testing.T) {
	s := startServer(t, "", serverFlags...)
	k := []byte("k")

	for _, name := range []string{"bad name", "../escape", "a/b", "dot.ted", "ünïcode", strings.Repeat("x", 300) + "/"} {
		what := fmt.Sprintf("partition %q", name)
		_, err := s.client.Put(ctx(t), &metadatav1.PutRequest{Partition: name, Key: k, Value: []byte("v")})
		requireCode(t, err, codes.InvalidArgument, "Put to "+what)
		_, err = s.client.Get(ctx(t), &metadatav1.GetRequest{Partition: name, Key: k})
		requireCode(t, err, codes.InvalidArgument, "Get from "+what)
		_, err = s.client.Remove(ctx(t), &metadatav1.RemoveRequest{Partition: name, Key: k})
		requireCode(t, err, codes.InvalidArgument, "Remove from "+what)
		_, err = s.client.Commit(ctx(t), &metadatav1.CommitRequest{Partition: name, Mutations: []*metadatav1.Mutation{put(k, nil)}})
		requireCode(t, err, codes.InvalidArgument, "Commit to "+what)
		_, err = s.client.Sync(ctx(t), &metadatav1.SyncRequest{Partition: name})
		requireCode(t, err, codes.InvalidArgument, "Sync of "+what)
		requireCode(t, keysErr(t, s, &metadatav1.KeysRequest{Partition: name}), codes.InvalidArgument, "Keys of "+what)
	}

	// fixed:8 partition: every key must be exactly 8 bytes.
	const f = "fixed8"
	for _, key := range [][]byte{u64(7)[:7], append(u64(9), 0), {}} {
		what := fmt.Sprintf("%d-byte key on %s", len(key), f)
		_, err := s.client.Put(ctx(t), &metadatav1.PutRequest{Partition: f, Key: key, Value: []byte("v")})
		requireCode(t, err, codes.InvalidArgument, "Put of a "+what)
		_, err = s.client.Get(ctx(t), &metadatav1.GetRequest{Partition: f, Key: key})
		requireCode(t, err, codes.InvalidArgument, "Get of a "+what)
		_, err = s.client.Remove(ctx(t), &metadatav1.RemoveRequest{Partition: f, Key: key})
		requireCode(t, err, codes.InvalidArgument, "Remove of a "+what)
		_, err = s.client.Commit(ctx(t), &metadatav1.CommitRequest{
			Partition: f, Mutations: []*metadatav1.Mutation{put(u64(1), []byte("ok")), put(key, []byte("v"))},
		})
		requireCode(t, err, codes.InvalidArgument, "Commit with a "+what)
		_, err = s.client.Commit(ctx(t), &metadatav1.CommitRequest{
			Partition: f, Mutations: []*metadatav1.Mutation{put(u64(1), []byte("ok"))}, Preconditions: []*metadatav1.Precondition{absent(key)},
		})
		requireCode(t, err, codes.InvalidArgument, "Commit with a precondition on a "+what)
	}
	requireAbsent(t, s, f, u64(1)) // the good mutations of the refused batches were not applied
	_, err := s.client.Put(ctx(t), &metadatav1.PutRequest{Partition: f, Key: u64(1), Value: []byte("ok")})
	requireOK(t, err, "Put of an 8-byte key")
	requireValue(t, s, f, u64(1), []byte("ok"))

	// Variable-width partition: the empty key is refused.
	_, err = s.client.Put(ctx(t), &metadatav1.PutRequest{Partition: "var", Key: nil, Value: []byte("v")})
	requireCode(t, err, codes.InvalidArgument, "Put of an empty key")

	// Oversize values (limit: --max-value-bytes 4096).
	_, err = s.client.Put(ctx(t), &metadatav1.PutRequest{Partition: "var", Key: k, Value: make([]byte, maxValueBytes+1)})
	requireCode(t, err, codes.InvalidArgument, "Put of an oversize value")
	_, err = s.client.Commit(ctx(t), &metadatav1.CommitRequest{
		Partition: "var", Mutations: []*metadatav1.Mutation{put([]byte("small"), []byte("v")), put(k, make([]byte, maxValueBytes+1))},
	})
	requireCode(t, err, codes.InvalidArgument, "Commit of an oversize value")
	if slices.Contains(partitions(t, s), "var") {
		t.Fatal("refused writes created a partition")
	}
	big := bytes.Repeat([]byte{0xab}, maxValueBytes)
	_, err = s.client.Put(ctx(t), &metadatav1.PutRequest{Partition: "var", Key: k, Value: big})
	requireOK(t, err, "Put of a value of exactly the limit")
	requireValue(t, s, "var", k, big)
	requireAbsent(t, s, "var", []byte("small"))
}

func TestDurabilityAcrossRestart(t *testing.T) {
	s := startServer(t, "", serverFlags...)
	const p = "durable"

	want := map[string]string{}
	for i := 0; i < 20; i++ {
		k, v := fmt.Sprintf("key-%02d", i), fmt.Sprintf("value-%02d", i)
		_, err := s.client.Put(ctx(t), &metadatav1.PutRequest{Partition: p, Key: []byte(k), Value: []byte(v)})
		requireOK(t, err, "durable Put")
		want[k] = v
	}
	for _, k := range []string{"key-03", "key-07"} {
		_, err := s.client.Remove(ctx(t), &metadatav1.RemoveRequest{Partition: p, Key: []byte(k)})
		requireOK(t, err, "durable Remove")
		delete(want, k)
	}
	_, err := s.client.Commit(ctx(t), &metadatav1.CommitRequest{
		Partition:     p,
		Mutations:     []*metadatav1.Mutation{put([]byte("key-00"), []byte("rewritten")), remove([]byte("key-19")), put([]byte("batch"), []byte("yes"))},
		Preconditions: []*metadatav1.Precondition{absent([]byte("batch"))},
	})
	requireOK(t, err, "durable Commit")
	want["key-00"], want["batch"] = "rewritten", "yes"
	delete(want, "key-19")
	_, err = s.client.Put(ctx(t), &metadatav1.PutRequest{Partition: "fixed8", Key: u64(42), Value: []byte("answer")})
	requireOK(t, err, "durable Put on fixed8")
	// Acknowledged buffered writes are committed by the shutdown at the latest.
	_, err = s.client.Put(ctx(t), &metadatav1.PutRequest{
		Partition: p, Key: []byte("buffered"), Value: []byte("flushed at stop"), Durability: metadatav1.Durability_DURABILITY_BUFFERED,
	})
	requireOK(t, err, "buffered Put")
	want["buffered"] = "flushed at stop"

	s = s.restart()

	for k, v := range want {
		requireValue(t, s, p, []byte(k), []byte(v))
	}
	for _, k := range []string{"key-03", "key-07", "key-19"} {
		requireAbsent(t, s, p, []byte(k))
	}
	requireValue(t, s, "fixed8", u64(42), []byte("answer"))
	listed := keys(t, s, &metadatav1.KeysRequest{Partition: p})
	if len(listed.keys) != len(want) {
		t.Fatalf("after restart Keys lists %d keys, want %d", len(listed.keys), len(want))
	}
	if got := partitions(t, s); !slices.Contains(got, p) || !slices.Contains(got, "fixed8") {
		t.Fatalf("after restart ListPartitions = %v", got)
	}

	// Writes after the restart continue from the recovered versions.
	reply, err := s.client.Put(ctx(t), &metadatav1.PutRequest{Partition: p, Key: []byte("after"), Value: []byte("restart")})
	requireOK(t, err, "Put after restart")
	if reply.GetVersion() <= listed.versions[0] {
		t.Fatalf("Put after restart at version %d, want > %d", reply.GetVersion(), listed.versions[0])
	}
}

// TestDurableWritesSurviveKill: acknowledged durable writes survive a SIGKILL of the server.
func TestDurableWritesSurviveKill(t *testing.T) {
	s := startServer(t, "", serverFlags...)
	const p = "crash"
	want := map[string]string{}
	for i := 0; i < 10; i++ {
		k, v := fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i)
		_, err := s.client.Put(ctx(t), &metadatav1.PutRequest{Partition: p, Key: []byte(k), Value: []byte(v)})
		requireOK(t, err, "durable Put")
		want[k] = v
	}
	_, err := s.client.Remove(ctx(t), &metadatav1.RemoveRequest{Partition: p, Key: []byte("k4")})
	requireOK(t, err, "durable Remove")
	delete(want, "k4")
	_, err = s.client.Commit(ctx(t), &metadatav1.CommitRequest{
		Partition: p, Mutations: []*metadatav1.Mutation{put([]byte("k0"), []byte("new")), put([]byte("k10"), []byte("v10"))},
	})
	requireOK(t, err, "durable Commit")
	want["k0"], want["k10"] = "new", "v10"

	s.kill()
	s = startServer(t, s.dataDir, s.flags...)
	listed := keys(t, s, &metadatav1.KeysRequest{Partition: p, IncludeValues: true})
	got := map[string]string{}
	for i, k := range listed.keys {
		got[string(k)] = string(listed.values[i])
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after SIGKILL and restart: %v, want %v", got, want)
	}
}

// TestExample builds the README's example program and runs it against a server.
func TestExample(t *testing.T) {
	s := startServer(t, "", serverFlags...)
	goTool, err := exec.LookPath("go") // `go test` puts its own GOROOT/bin first on PATH
	requireOK(t, err, "find the go command")
	bin := filepath.Join(t.TempDir(), "example")
	build := exec.Command(goTool, "build", "-o", bin, "./example")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./example: %v\n%s", err, out)
	}
	for run := 1; run <= 2; run++ { // a second run finds the first one's data
		out, err := exec.Command(bin, "-addr", s.addr).CombinedOutput()
		if err != nil {
			t.Fatalf("example run %d: %v\n%s", run, err, out)
		}
		for _, line := range []string{"put greeting", "get greeting = \"hello, world\"", "keys with prefix \"user/\": user/1 user/2 user/3", "commit applied at version", "precondition failed as expected"} {
			if !strings.Contains(string(out), line) {
				t.Fatalf("example run %d output lacks %q:\n%s", run, line, out)
			}
		}
	}
}
