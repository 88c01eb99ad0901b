package metadataclient_test

// Watch through the Go helpers (watch.go) against the real server: put, overwrite and remove
// events in version order with the list-then-watch recipe, a Commit as one response, concurrent
// writers seen exactly once from a listing, and OUT_OF_RANGE with the version to resume from
// when the history no longer holds the start version.

import (
	"fmt"
	"sync"
	"testing"

	metadataclient "github.com/commonware-metadata/clients/go"
	metadatav1 "github.com/commonware-metadata/clients/go/gen/commonware/metadata/v1"
	"google.golang.org/grpc/codes"
)

// show renders a response as "v: a=1 b-" ("-" for a removal).
func show(resp *metadatav1.WatchResponse) string {
	out := fmt.Sprint(resp.GetVersion(), ":")
	for _, ev := range resp.GetEvents() {
		if ev.Value == nil {
			out += fmt.Sprintf(" %s-", ev.GetKey())
		} else {
			out += fmt.Sprintf(" %s=%s", ev.GetKey(), ev.GetValue())
		}
	}
	return out
}

func TestWatch(t *testing.T) {
	s := startServer(t, "", serverFlags...)
	const p = "watched"
	putReply, err := s.client.Put(ctx(t), &metadatav1.PutRequest{Partition: p, Key: []byte("a"), Value: []byte("0")})
	requireOK(t, err, "Put")

	version, keys, values, err := metadataclient.ListWithVersion(ctx(t), s.client, &metadatav1.KeysRequest{Partition: p, IncludeValues: true})
	requireOK(t, err, "ListWithVersion")
	if version != putReply.GetVersion() || len(keys) != 1 || string(values[0]) != "0" {
		t.Fatalf("listing = %d %q %q; want version %d with a=0", version, keys, values, putReply.GetVersion())
	}

	var want []string
	write := func(m ...*metadatav1.Mutation) {
		reply, err := s.client.Commit(ctx(t), &metadatav1.CommitRequest{Partition: p, Mutations: m})
		requireOK(t, err, "Commit")
		resp := &metadatav1.WatchResponse{Version: reply.GetVersion()}
		for _, mutation := range m {
			if put := mutation.GetPut(); put != nil {
				resp.Events = append(resp.Events, &metadatav1.WatchEvent{Key: put.GetKey(), Value: put.GetValue()})
			} else {
				resp.Events = append(resp.Events, &metadatav1.WatchEvent{Key: mutation.GetRemove().GetKey()})
			}
		}
		want = append(want, show(resp))
	}
	write(put([]byte("a"), []byte("1")))
	write(put([]byte("a"), []byte("2")))
	write(remove([]byte("a")))
	write(put([]byte("b"), []byte("x")), put([]byte("c"), []byte("y")))

	var got []string
	req := &metadatav1.WatchRequest{Partition: p, StartVersion: version + 1, IncludeValues: true}
	for resp, err := range metadataclient.Watch(ctx(t), s.client, req) {
		requireOK(t, err, "Watch")
		got = append(got, show(resp))
		if len(got) == len(want) {
			break
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("watched %q, want %q", got, want)
	}

	// Without include_values a put carries an empty value, present all the same.
	for resp, err := range metadataclient.Watch(ctx(t), s.client, &metadatav1.WatchRequest{Partition: p, StartVersion: version + 1}) {
		requireOK(t, err, "Watch")
		if ev := resp.GetEvents()[0]; ev.Value == nil || len(ev.Value) != 0 {
			t.Fatalf("put event without include_values = %v; want an empty value", ev)
		}
		break
	}
}

func TestWatchConcurrentWriters(t *testing.T) {
	s := startServer(t, "", serverFlags...)
	const p = "busy"
	const writers, perWriter = 8, 50
	var wg sync.WaitGroup
	write := func(w int) {
		defer wg.Done()
		for i := 0; i < perWriter; i++ {
			key := []byte(fmt.Sprintf("k%02d", (w*7+i)%20))
			_, err := s.client.Put(ctx(t), &metadatav1.PutRequest{Partition: p, Key: key, Value: []byte(fmt.Sprint(w, "/", i))})
			if err != nil {
				t.Errorf("Put: %v", err)
				return
			}
		}
	}
	wg.Add(writers)
	for w := 0; w < writers/2; w++ {
		go write(w)
	}
	// Listed while half the writers run, watched from there while the other half start.
	version, keys, values, err := metadataclient.ListWithVersion(ctx(t), s.client, &metadatav1.KeysRequest{Partition: p, IncludeValues: true})
	requireOK(t, err, "ListWithVersion")
	for w := writers / 2; w < writers; w++ {
		go write(w)
	}
	wg.Wait()
	final, finalKeys, finalValues, err := metadataclient.ListWithVersion(ctx(t), s.client, &metadatav1.KeysRequest{Partition: p, IncludeValues: true})
	requireOK(t, err, "ListWithVersion")

	state := map[string]string{}
	for i, k := range keys {
		state[string(k)] = string(values[i])
	}
	last := version
	if final > version {
		for resp, err := range metadataclient.Watch(ctx(t), s.client, &metadatav1.WatchRequest{Partition: p, StartVersion: version + 1, IncludeValues: true}) {
			requireOK(t, err, "Watch")
			if resp.GetVersion() <= last {
				t.Fatalf("version %d after %d", resp.GetVersion(), last)
			}
			last = resp.GetVersion()
			for _, ev := range resp.GetEvents() {
				if ev.Value == nil {
					delete(state, string(ev.GetKey()))
				} else {
					state[string(ev.GetKey())] = string(ev.GetValue())
				}
			}
			if last >= final {
				break
			}
		}
	}
	if last != final {
		t.Fatalf("watch stopped at %d, want %d", last, final)
	}
	if len(state) != len(finalKeys) {
		t.Fatalf("watched state has %d keys, the final listing %d", len(state), len(finalKeys))
	}
	for i, k := range finalKeys {
		if state[string(k)] != string(finalValues[i]) {
			t.Fatalf("key %s: watched %q, listed %q", k, state[string(k)], finalValues[i])
		}
	}
}

func TestWatchOutOfRange(t *testing.T) {
	s := startServer(t, "", append([]string{"--watch-history-syncs", "2"}, serverFlags...)...)
	var versions []uint64
	for i := 0; i < 5; i++ {
		reply, err := s.client.Put(ctx(t), &metadatav1.PutRequest{Key: []byte(fmt.Sprint("k", i)), Value: []byte("v")})
		requireOK(t, err, "Put")
		versions = append(versions, reply.GetVersion())
	}
	for _, err := range metadataclient.Watch(ctx(t), s.client, &metadatav1.WatchRequest{StartVersion: versions[0]}) {
		requireCode(t, err, codes.OutOfRange, "Watch from a version the history no longer holds")
		oldest, ok := metadataclient.OldestAvailableVersion(err)
		if !ok || oldest != versions[3] {
			t.Fatalf("OldestAvailableVersion(%v) = %d, %v; want %d", err, oldest, ok, versions[3])
		}
		break
	}
}
