// Request builders: every request a run sends is encoded here, before the run starts, with two
// exceptions built per call: the Puts of the insert workload (each a key never written before) and
// the WriteRequest envelope of the Write stream (a few bytes around a pre-encoded PutRequest,
// carrying the id its answer must echo).
//
// MetadataService requests are built with the generated Go types of clients/go (so a change of the
// proto breaks the build here, not the figures). etcd requests are written with protowire from the
// field numbers of etcdserverpb (api/etcdserverpb/rpc.proto, unchanged from 3.4 to 3.6), so the
// load generator needs no etcd module:
//
//	PutRequest   { bytes key = 1; bytes value = 2; }
//	RangeRequest { bytes key = 1; bool serializable = 7; }
//	RequestOp    { oneof request { PutRequest request_put = 2; } }
//	TxnRequest   { repeated RequestOp success = 2; }
//	RangeResponse { repeated mvccpb.KeyValue kvs = 2; }

package main

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"

	metadatav1 "github.com/commonware-metadata/clients/go/gen/commonware/metadata/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Full method names of the etcd v3 KV service.
const (
	etcdPutMethod   = "/etcdserverpb.KV/Put"
	etcdRangeMethod = "/etcdserverpb.KV/Range"
	etcdTxnMethod   = "/etcdserverpb.KV/Txn"
)

// valueVariants is how many different values each key cycles through, so that a put always
// changes the stored value.
const valueVariants = 2

// keyAt returns key i of the key space: keyBytes bytes, unique per i, spread over the byte range
// (the index is scrambled by an odd multiplier, a bijection mod 2^64), so that keys are not
// written in ascending order. 16-byte keys append the plain index.
func keyAt(i, keyBytes int) []byte {
	scrambled := uint64(i) * 0x9e3779b97f4a7c15
	key := make([]byte, keyBytes)
	var word [8]byte
	binary.BigEndian.PutUint64(word[:], scrambled)
	copy(key, word[:])
	if keyBytes > 8 {
		binary.BigEndian.PutUint64(word[:], uint64(i))
		copy(key[8:], word[:])
	}
	return key
}

// valueAt returns variant v of the value of key i: valueBytes pseudo-random bytes.
func valueAt(i, v, valueBytes int) []byte {
	rng := rand.New(rand.NewPCG(uint64(i), uint64(v)+1))
	value := make([]byte, valueBytes)
	for j := range value {
		value[j] = byte(rng.Uint32())
	}
	return value
}

func mustMarshal(m proto.Message) rawMessage {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("marshal %T: %v", m, err))
	}
	return b
}

// ourPuts returns PutRequests indexed by key*valueVariants+variant.
func ourPuts(c *config, durability metadatav1.Durability) []rawMessage {
	out := make([]rawMessage, 0, c.keyspace*valueVariants)
	for i := 0; i < c.keyspace; i++ {
		key := keyAt(i, c.keyBytes)
		for v := 0; v < valueVariants; v++ {
			out = append(out, mustMarshal(&metadatav1.PutRequest{
				Partition:  c.partition,
				Key:        key,
				Value:      valueAt(i, v, c.valueBytes),
				Durability: durability,
			}))
		}
	}
	return out
}

// ourInsert returns the PutRequest of key i with variant 0 of its value.
func ourInsert(c *config, i int, durability metadatav1.Durability) rawMessage {
	return mustMarshal(&metadatav1.PutRequest{
		Partition:  c.partition,
		Key:        keyAt(i, c.keyBytes),
		Value:      valueAt(i, 0, c.valueBytes),
		Durability: durability,
	})
}

// writeRequest wraps an encoded PutRequest in a WriteRequest { id = 1; put = 2 }. An id of 0 is
// written explicitly, which any decoder reads as the default.
func writeRequest(id uint64, put rawMessage) rawMessage {
	b := make([]byte, 0, 2+protowire.SizeVarint(id)+protowire.SizeBytes(len(put)))
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, id)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, put)
	return b
}

// ourGets returns one GetRequest per key.
func ourGets(c *config) []rawMessage {
	out := make([]rawMessage, c.keyspace)
	for i := range out {
		out[i] = mustMarshal(&metadatav1.GetRequest{Partition: c.partition, Key: keyAt(i, c.keyBytes)})
	}
	return out
}

// ourCommit returns a CommitRequest that puts the given keys (variant v of each value).
func ourCommit(c *config, keys []int, v int, durability metadatav1.Durability) rawMessage {
	req := &metadatav1.CommitRequest{Partition: c.partition, Durability: durability}
	for _, i := range keys {
		req.Mutations = append(req.Mutations, &metadatav1.Mutation{
			Kind: &metadatav1.Mutation_Put_{Put: &metadatav1.Mutation_Put{
				Key:   keyAt(i, c.keyBytes),
				Value: valueAt(i, v, c.valueBytes),
			}},
		})
	}
	return mustMarshal(req)
}

// ourKeys returns the KeysRequest that lists the whole partition.
func ourKeys(c *config) rawMessage {
	return mustMarshal(&metadatav1.KeysRequest{Partition: c.partition})
}

// etcdKey is key i of the key space under the run's partition name used as a prefix.
func etcdKey(c *config, i int) []byte {
	return append([]byte(c.partition+"/"), keyAt(i, c.keyBytes)...)
}

func etcdPutBody(key, value []byte) []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendBytes(b, key)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, value)
	return b
}

// etcdPuts returns etcd PutRequests indexed by key*valueVariants+variant.
func etcdPuts(c *config) []rawMessage {
	out := make([]rawMessage, 0, c.keyspace*valueVariants)
	for i := 0; i < c.keyspace; i++ {
		key := etcdKey(c, i)
		for v := 0; v < valueVariants; v++ {
			out = append(out, etcdPutBody(key, valueAt(i, v, c.valueBytes)))
		}
	}
	return out
}

// etcdRanges returns one single-key RangeRequest per key. A serializable range is answered from
// the member's local state; otherwise (etcd's default) it is linearizable and waits for a read
// index from raft first.
func etcdRanges(c *config, serializable bool) []rawMessage {
	out := make([]rawMessage, c.keyspace)
	for i := range out {
		var b []byte
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, etcdKey(c, i))
		if serializable {
			b = protowire.AppendTag(b, 7, protowire.VarintType)
			b = protowire.AppendVarint(b, 1)
		}
		out[i] = b
	}
	return out
}

// etcdTxn returns a TxnRequest with no compare and one put per key (variant v of each value).
func etcdTxn(c *config, keys []int, v int) rawMessage {
	var b []byte
	for _, i := range keys {
		var op []byte
		op = protowire.AppendTag(op, 2, protowire.BytesType)
		op = protowire.AppendBytes(op, etcdPutBody(etcdKey(c, i), valueAt(i, v, c.valueBytes)))
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, op)
	}
	return b
}

// batches returns n batches of size distinct random keys each, drawn from the key space.
func batches(c *config, n, size int) [][]int {
	rng := rand.New(rand.NewPCG(c.seed, 0xba7c4))
	out := make([][]int, n)
	for b := range out {
		seen := make(map[int]bool, size)
		keys := make([]int, 0, size)
		for len(keys) < size && len(keys) < c.keyspace {
			i := rng.IntN(c.keyspace)
			if !seen[i] {
				seen[i] = true
				keys = append(keys, i)
			}
		}
		out[b] = keys
	}
	return out
}

// populateBatches covers the key space in order, size keys per batch.
func populateBatches(c *config, size int) [][]int {
	var out [][]int
	for start := 0; start < c.keyspace; start += size {
		end := min(start+size, c.keyspace)
		keys := make([]int, 0, end-start)
		for i := start; i < end; i++ {
			keys = append(keys, i)
		}
		out = append(out, keys)
	}
	return out
}
