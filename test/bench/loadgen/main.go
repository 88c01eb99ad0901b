// Command loadgen drives one gRPC workload against a server on this machine's loopback and prints
// one JSON object with the figures. It is the client of test/bench/rpc.bench.ts (npm run
// bench:rpc), which runs it against our MetadataService, etcd 3.4 and a no-op grpc-js server.
//
// A run: connect -conns HTTP/2 connections (one grpc.ClientConn each, callers spread round-robin),
// optionally populate the key space, then -concurrency callers issue calls back to back (for the
// Write stream workloads, each caller is a stream keeping -inflight requests in flight): -warmup
// unmeasured, then -duration measured. Callers stop issuing at the end of the window; calls still
// in flight finish (and count) unless -grace runs out, when every call is cancelled. Every phase
// has a deadline, so a run always ends by itself.
//
// Workloads (requests are encoded before the run, but for the exceptions requests.go names):
//
//	put          MetadataService/Put, -durability durable|buffered, random keys of the key space
//	noop         the same Put requests, meant for test/bench/noop-server.ts
//	get          MetadataService/Get of keys that exist (populated first)
//	commit100    MetadataService/Commit of -batch puts of distinct random keys
//	keys         MetadataService/Keys: stream the whole partition, one op per listing
//	etcd-put     etcdserverpb.KV/Put
//	etcd-get     etcdserverpb.KV/Range of one existing key (populated first), linearizable
//	etcd-get-serializable  the same Range, serializable (answered from the member's own state)
//	etcd-txn100  etcdserverpb.KV/Txn with -batch puts
//	stream-put   MetadataService/Write: each caller is one stream with -inflight requests in flight,
//	             each a WriteRequest{id, put} around the put workload's PutRequests; an op is one
//	             answered request (see stream.go)
//	stream-noop  the same stream, meant for test/bench/noop-server.ts
//	insert       MetadataService/Put of keys never written before (a shared counter from key index
//	             -keyspace up, each request encoded per call), so the partition grows by one key a
//	             call and every sync rewrites its blob in full
//
// With -watchers N (put, durable), N Watch streams of the partition run on connections of their own
// from before the warm-up, and the JSON gains "watch": the delay from a version's commit to each
// watcher's receipt, bounded below and above from the Puts' send and answer times (watch.go).
//
// With -handshake, the end of the warm-up is announced on stderr as "loadgen: ready", the window
// opens when a line arrives on stdin (so the caller can sample server counters exactly at the
// window's edges), and "loadgen: done" follows once every call has finished.
//
// Only loopback targets are accepted.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	metadatav1 "github.com/commonware-metadata/clients/go/gen/commonware/metadata/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// config holds the command-line flags.
type config struct {
	target      string
	token       string
	workload    string
	conns       int
	concurrency int
	duration    time.Duration
	warmup      time.Duration
	grace       time.Duration
	durability  string
	keyBytes    int
	valueBytes  int
	keyspace    int
	batch       int
	partition   string
	populate    bool
	seed        uint64
	handshake   bool
	inflight    int
	watchers    int
	watchConns  int
}

// plan is what one workload sends.
type plan struct {
	method string
	// stream marks a server-streaming method (Keys); its op is one whole listing.
	stream bool
	// write marks the bidirectional Write stream: next returns the PutRequest of one
	// WriteRequest, and an op is one answered request.
	write bool
	// versions marks a durable put workload whose callers decode PutResponse.version and keep the
	// send and answer times of each version (for the watchers, see watch.go).
	versions bool
	// next returns the request of one call.
	next func(rng *rand.Rand) rawMessage
	// itemsPerOp is the mutations (or reads) per call; 0 means counted from the stream.
	itemsPerOp int
	// populate, sent once each through populateMethod before the warm-up, fills the key space.
	populate       []rawMessage
	populateMethod string
	// verify is one call of method whose response must carry field verifyField, checked after
	// populating, so that a read workload never measures misses.
	verify      rawMessage
	verifyField protowire.Number
}

// result is the JSON printed on stdout.
type result struct {
	Workload          string         `json:"workload"`
	Target            string         `json:"target"`
	Conns             int            `json:"conns"`
	Concurrency       int            `json:"concurrency"`
	Inflight          int            `json:"inflight"`
	WindowS           float64        `json:"window_s"`
	Ops               int64          `json:"ops"`
	OpsPerS           float64        `json:"ops_per_s"`
	Items             int64          `json:"items"`
	ItemsPerS         float64        `json:"items_per_s"`
	LatencyUs         latency        `json:"latency_us"`
	Errors            map[string]int `json:"errors"`
	ErrorsTotal       int            `json:"errors_total"`
	WarmupOps         int64          `json:"warmup_ops"`
	WarmupErrors      int            `json:"warmup_errors"`
	ClientCPUS        float64        `json:"client_cpu_s"`
	ClientCPUUsPerOp  float64        `json:"client_cpu_us_per_op"`
	PopulatedRequests int            `json:"populated_requests"`
	PopulateS         float64        `json:"populate_s"`
	HandshakeTimedOut bool           `json:"handshake_timed_out,omitempty"`
	Watch             *watchResult   `json:"watch,omitempty"`
}

type latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// tally is what one caller measured.
type tally struct {
	latencies    []int64
	ops          int64
	items        int64
	errors       map[codes.Code]int
	warmupOps    int64
	warmupErrors int
	// spans, for a plan with versions: per version answered, the latest send and earliest answer.
	spans map[uint64]versionSpan
}

func main() {
	c := parseFlags()
	if err := run(c); err != nil {
		fmt.Fprintf(os.Stderr, "loadgen: %v\n", err)
		os.Exit(1)
	}
}

func parseFlags() *config {
	c := &config{}
	flag.StringVar(&c.target, "target", "", "host:port of the server, or several comma-separated (members of one cluster: connections go round-robin); loopback only (127.0.0.1, ::1, localhost)")
	flag.StringVar(&c.workload, "workload", "put", "put|noop|get|commit100|keys|etcd-put|etcd-get|etcd-get-serializable|etcd-txn100|stream-put|stream-noop|insert")
	flag.IntVar(&c.conns, "conns", 4, "HTTP/2 connections")
	flag.IntVar(&c.concurrency, "concurrency", 8, "concurrent callers (Write streams for stream-put, stream-noop)")
	flag.IntVar(&c.inflight, "inflight", 1, "requests in flight per Write stream (stream-put, stream-noop)")
	flag.DurationVar(&c.duration, "duration", 5*time.Second, "measured window")
	flag.DurationVar(&c.warmup, "warmup", time.Second, "unmeasured load before the window")
	flag.DurationVar(&c.grace, "grace", 5*time.Second, "time calls in flight at the end may take before they are cancelled")
	flag.StringVar(&c.durability, "durability", "durable", "durable|buffered (put, noop, commit100, stream-put, stream-noop, insert)")
	flag.IntVar(&c.keyBytes, "key-bytes", 8, "key width in bytes (8 or 16)")
	flag.IntVar(&c.valueBytes, "value-bytes", 100, "value size in bytes")
	flag.IntVar(&c.keyspace, "keyspace", 10000, "distinct keys")
	flag.IntVar(&c.batch, "batch", 100, "puts per Commit / Txn (commit100, etcd-txn100) and per populate request")
	flag.StringVar(&c.partition, "partition", "bench", "partition (for etcd: key prefix)")
	flag.BoolVar(&c.populate, "populate", false, "write the whole key space before the warm-up (default on for get, etcd-get, keys)")
	flag.Uint64Var(&c.seed, "seed", 1, "seed of the key choice")
	flag.BoolVar(&c.handshake, "handshake", false, "announce the window on stderr and open it on a line from stdin")
	flag.StringVar(&c.token, "token", "", "bearer token sent as authorization metadata on every call (servers with --auth-tokens)")
	flag.IntVar(&c.watchers, "watchers", 0, "Watch streams of the partition open during the run (put, durable; see watch.go)")
	flag.IntVar(&c.watchConns, "watch-conns", 4, "HTTP/2 connections of the watchers, apart from the callers'")
	flag.Parse()
	return c
}

func (c *config) validate() error {
	for _, target := range strings.Split(c.target, ",") {
		host, _, err := net.SplitHostPort(target)
		if err != nil {
			return fmt.Errorf("-target %q: %v", target, err)
		}
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return fmt.Errorf("-target %q: only loopback targets are allowed", target)
		}
	}
	switch {
	case c.conns < 1 || c.conns > 64:
		return fmt.Errorf("-conns %d: use 1..64", c.conns)
	case c.concurrency < 1 || c.concurrency > 4096:
		return fmt.Errorf("-concurrency %d: use 1..4096", c.concurrency)
	case c.duration <= 0 || c.duration > 10*time.Minute:
		return fmt.Errorf("-duration %v: use (0, 10m]", c.duration)
	case c.warmup < 0 || c.warmup > time.Minute:
		return fmt.Errorf("-warmup %v: use [0, 1m]", c.warmup)
	case c.grace <= 0 || c.grace > time.Minute:
		return fmt.Errorf("-grace %v: use (0, 1m]", c.grace)
	case c.keyBytes != 8 && c.keyBytes != 16:
		return fmt.Errorf("-key-bytes %d: use 8 or 16", c.keyBytes)
	case c.valueBytes < 0 || c.valueBytes > 1<<20:
		return fmt.Errorf("-value-bytes %d: use 0..1048576", c.valueBytes)
	case c.keyspace < 1 || c.keyspace > 10_000_000:
		return fmt.Errorf("-keyspace %d: use 1..10000000", c.keyspace)
	case c.batch < 1 || c.batch > 10_000:
		return fmt.Errorf("-batch %d: use 1..10000", c.batch)
	case c.durability != "durable" && c.durability != "buffered":
		return fmt.Errorf("-durability %q: use durable or buffered", c.durability)
	case c.inflight < 1 || c.inflight > 1024:
		return fmt.Errorf("-inflight %d: use 1..1024 (the server's default window is 1024)", c.inflight)
	case c.inflight > 1 && !strings.HasPrefix(c.workload, "stream-"):
		return fmt.Errorf("-inflight %d: only for stream-put and stream-noop", c.inflight)
	case c.watchers < 0 || c.watchers > 1000:
		return fmt.Errorf("-watchers %d: use 0..1000", c.watchers)
	case c.watchers > 0 && (c.workload != "put" || c.durability != "durable"):
		return fmt.Errorf("-watchers %d: only for the put workload, durable (a delivery is timed from the version a Put is answered with)", c.watchers)
	case c.watchConns < 1 || c.watchConns > 64:
		return fmt.Errorf("-watch-conns %d: use 1..64", c.watchConns)
	}
	return nil
}

// buildPlan encodes every request of the workload.
func buildPlan(c *config) (*plan, error) {
	durability := metadatav1.Durability_DURABILITY_DURABLE
	if c.durability == "buffered" {
		durability = metadatav1.Durability_DURABILITY_BUFFERED
	}
	pick := func(reqs []rawMessage) func(*rand.Rand) rawMessage {
		return func(rng *rand.Rand) rawMessage { return reqs[rng.IntN(len(reqs))] }
	}
	// A pool of distinct random batches, each in every value variant, for Commit and Txn.
	batchPool := func(encode func(keys []int, v int) rawMessage) []rawMessage {
		var out []rawMessage
		for _, keys := range batches(c, 64, c.batch) {
			for v := 0; v < valueVariants; v++ {
				out = append(out, encode(keys, v))
			}
		}
		return out
	}
	ourPopulate := func() []rawMessage {
		var out []rawMessage
		for _, keys := range populateBatches(c, c.batch) {
			out = append(out, ourCommit(c, keys, 0, metadatav1.Durability_DURABILITY_DURABLE))
		}
		return out
	}
	etcdPopulate := func() []rawMessage {
		var out []rawMessage
		for _, keys := range populateBatches(c, c.batch) {
			out = append(out, etcdTxn(c, keys, 0))
		}
		return out
	}
	var p *plan
	switch c.workload {
	case "put", "noop":
		p = &plan{method: metadatav1.MetadataService_Put_FullMethodName, next: pick(ourPuts(c, durability)), itemsPerOp: 1}
		p.versions = c.watchers > 0
		if c.populate && c.workload == "put" {
			p.populate, p.populateMethod = ourPopulate(), metadatav1.MetadataService_Commit_FullMethodName
		}
	case "stream-put", "stream-noop":
		p = &plan{method: metadatav1.MetadataService_Write_FullMethodName, write: true, next: pick(ourPuts(c, durability)), itemsPerOp: 1}
		if c.populate && c.workload == "stream-put" {
			p.populate, p.populateMethod = ourPopulate(), metadatav1.MetadataService_Commit_FullMethodName
		}
	case "insert":
		// Shared by every caller; starts past the key space, so no key is one populate wrote.
		var nextKey atomic.Int64
		nextKey.Store(int64(c.keyspace))
		p = &plan{
			method:     metadatav1.MetadataService_Put_FullMethodName,
			next:       func(*rand.Rand) rawMessage { return ourInsert(c, int(nextKey.Add(1)-1), durability) },
			itemsPerOp: 1,
		}
		if c.populate {
			p.populate, p.populateMethod = ourPopulate(), metadatav1.MetadataService_Commit_FullMethodName
		}
	case "get":
		gets := ourGets(c)
		p = &plan{method: metadatav1.MetadataService_Get_FullMethodName, next: pick(gets), itemsPerOp: 1}
		if c.populate {
			p.populate, p.populateMethod = ourPopulate(), metadatav1.MetadataService_Commit_FullMethodName
		}
		p.verify, p.verifyField = gets[len(gets)-1], 1
	case "commit100":
		p = &plan{
			method:     metadatav1.MetadataService_Commit_FullMethodName,
			next:       pick(batchPool(func(keys []int, v int) rawMessage { return ourCommit(c, keys, v, durability) })),
			itemsPerOp: c.batch,
		}
		if c.populate {
			p.populate, p.populateMethod = ourPopulate(), metadatav1.MetadataService_Commit_FullMethodName
		}
	case "keys":
		req := ourKeys(c)
		p = &plan{method: metadatav1.MetadataService_Keys_FullMethodName, stream: true, next: func(*rand.Rand) rawMessage { return req }}
		if c.populate {
			p.populate, p.populateMethod = ourPopulate(), metadatav1.MetadataService_Commit_FullMethodName
		}
	case "etcd-put":
		p = &plan{method: etcdPutMethod, next: pick(etcdPuts(c)), itemsPerOp: 1}
		if c.populate {
			p.populate, p.populateMethod = etcdPopulate(), etcdTxnMethod
		}
	case "etcd-get", "etcd-get-serializable":
		ranges := etcdRanges(c, c.workload == "etcd-get-serializable")
		p = &plan{method: etcdRangeMethod, next: pick(ranges), itemsPerOp: 1}
		if c.populate {
			p.populate, p.populateMethod = etcdPopulate(), etcdTxnMethod
		}
		p.verify, p.verifyField = ranges[len(ranges)-1], 2
	case "etcd-txn100":
		p = &plan{method: etcdTxnMethod, next: pick(batchPool(func(keys []int, v int) rawMessage { return etcdTxn(c, keys, v) })), itemsPerOp: c.batch}
		if c.populate {
			p.populate, p.populateMethod = etcdPopulate(), etcdTxnMethod
		}
	default:
		return nil, fmt.Errorf("-workload %q: unknown", c.workload)
	}
	return p, nil
}

// bearer is per-RPC credentials sending one authorization header; the target is loopback only,
// so it may travel without TLS.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }

// dial opens n connections, to the comma-separated targets in turn, and waits until each is ready.
func dial(ctx context.Context, targets string, n int, token string) ([]*grpc.ClientConn, error) {
	conns := make([]*grpc.ClientConn, 0, n)
	options := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})),
	}
	if token != "" {
		options = append(options, grpc.WithPerRPCCredentials(bearer("Bearer "+token)))
	}
	list := strings.Split(targets, ",")
	for i := range n {
		target := list[i%len(list)]
		// passthrough: no resolver, each ClientConn is exactly one HTTP/2 connection to target.
		cc, err := grpc.NewClient("passthrough:///"+target, options...)
		if err != nil {
			closeAll(conns)
			return nil, err
		}
		conns = append(conns, cc)
		cc.Connect()
		for state := cc.GetState(); state != connectivity.Ready; state = cc.GetState() {
			if state == connectivity.TransientFailure || !cc.WaitForStateChange(ctx, state) {
				closeAll(conns)
				return nil, fmt.Errorf("connect to %s: %v", target, state)
			}
		}
	}
	return conns, nil
}

func closeAll(conns []*grpc.ClientConn) {
	for _, cc := range conns {
		_ = cc.Close()
	}
}

// populateAll sends every populate request, 8 at a time; any error ends the run.
func populateAll(ctx context.Context, conns []*grpc.ClientConn, p *plan) error {
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cc := conns[w%len(conns)]
			for {
				i := int(next.Add(1) - 1)
				if i >= len(p.populate) || failed.Load() != nil {
					return
				}
				var out sink
				if err := cc.Invoke(ctx, p.populateMethod, p.populate[i], &out); err != nil {
					failed.CompareAndSwap(nil, fmt.Errorf("populate %s: %v", p.populateMethod, err))
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, ok := failed.Load().(error); ok {
		return err
	}
	return nil
}

// call runs one op and returns the items it moved.
func call(ctx context.Context, cc *grpc.ClientConn, p *plan, req rawMessage) (int, error) {
	if !p.stream {
		var out sink
		return p.itemsPerOp, cc.Invoke(ctx, p.method, req, &out)
	}
	st, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, p.method)
	if err != nil {
		return 0, err
	}
	if err := st.SendMsg(req); err != nil {
		return 0, err
	}
	if err := st.CloseSend(); err != nil {
		return 0, err
	}
	var counter keysCounter
	for {
		if err := st.RecvMsg(&counter); err != nil {
			if errors.Is(err, io.EOF) {
				return counter.n, nil
			}
			return counter.n, err
		}
	}
}

// callPut runs one Put and returns the version it was answered with.
func callPut(ctx context.Context, cc *grpc.ClientConn, p *plan, req rawMessage) (uint64, error) {
	var out putAnswer
	err := cc.Invoke(ctx, p.method, req, &out)
	return out.version, err
}

// watchOpenTimeout bounds the wait, after the warm-up, for every watcher's first message;
// watchDrainMax the wait, after the window, for every watcher to receive the last version.
const (
	watchOpenTimeout = 10 * time.Second
	watchDrainMax    = 5 * time.Second
)

// cpuSeconds is this process's user+system CPU time.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// awaitGo announces the end of the warm-up and waits (at most 10 s) for a line on stdin.
func awaitGo() (timedOut bool) {
	fmt.Fprintln(os.Stderr, "loadgen: ready")
	line := make(chan struct{}, 1)
	go func() {
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		line <- struct{}{}
	}()
	select {
	case <-line:
		return false
	case <-time.After(10 * time.Second):
		return true
	}
}

func run(c *config) error {
	if err := c.validate(); err != nil {
		return err
	}
	populateSet := false
	flag.Visit(func(f *flag.Flag) { populateSet = populateSet || f.Name == "populate" })
	if !populateSet && (c.workload == "get" || strings.HasPrefix(c.workload, "etcd-get") || c.workload == "keys") {
		c.populate = true
	}
	p, err := buildPlan(c)
	if err != nil {
		return err
	}

	// Every phase runs under a deadline derived from the flags, so the process always ends.
	setupCtx, cancelSetup := context.WithTimeout(context.Background(), 10*time.Second)
	conns, err := dial(setupCtx, c.target, c.conns, c.token)
	cancelSetup()
	if err != nil {
		return err
	}
	defer closeAll(conns)

	res := result{Workload: c.workload, Target: c.target, Conns: c.conns, Concurrency: c.concurrency, Inflight: c.inflight, Errors: map[string]int{}}
	if len(p.populate) > 0 {
		started := time.Now()
		popCtx, cancelPop := context.WithTimeout(context.Background(), 2*time.Minute)
		err := populateAll(popCtx, conns, p)
		cancelPop()
		if err != nil {
			return err
		}
		res.PopulatedRequests, res.PopulateS = len(p.populate), time.Since(started).Seconds()
	}
	if p.verify != nil {
		vctx, cancelV := context.WithTimeout(context.Background(), 10*time.Second)
		out := sink{field: p.verifyField}
		err := conns[0].Invoke(vctx, p.method, p.verify, &out)
		cancelV()
		if err != nil {
			return fmt.Errorf("verify %s: %v", p.method, err)
		}
		if !out.found {
			return fmt.Errorf("verify %s: a populated key reads as missing", p.method)
		}
	}

	// Callers run until stop is set; an op counts when it starts at or after windowStart.
	base := time.Now()
	var stop atomic.Bool
	var windowStart atomic.Int64 // nanoseconds since base; 0 while warming up
	hardStop := c.warmup + 10*time.Second + c.duration + c.grace
	if c.watchers > 0 {
		// The wait for every watcher's first message.
		hardStop += watchOpenTimeout
	}
	runCtx, cancelRun := context.WithTimeout(context.Background(), hardStop)
	defer cancelRun()

	// Watchers, on connections of their own, are open before the first Put is sent.
	var watchers *watchRun
	if c.watchers > 0 {
		wctx, cancelW := context.WithTimeout(context.Background(), 10*time.Second)
		watchConns, err := dial(wctx, c.target, c.watchConns, c.token)
		cancelW()
		if err != nil {
			return fmt.Errorf("watchers: %v", err)
		}
		defer closeAll(watchConns)
		watchCtx, cancelWatch := context.WithTimeout(context.Background(), hardStop+watchDrainMax)
		defer cancelWatch()
		watchers = startWatchers(watchCtx, watchConns, c.watchers, watchRequest(c), base, &windowStart)
		res.Watch = &watchResult{Watchers: c.watchers, Conns: c.watchConns}
	}

	streams := &streamRun{p: p, inflight: c.inflight, base: base, stop: &stop, windowStart: &windowStart}
	tallies := make([]*tally, c.concurrency)
	var wg sync.WaitGroup
	for w := range c.concurrency {
		t := &tally{errors: map[codes.Code]int{}}
		if p.versions {
			t.spans = map[uint64]versionSpan{}
		}
		tallies[w] = t
		wg.Add(1)
		go func() {
			defer wg.Done()
			cc := conns[w%len(conns)]
			rng := rand.New(rand.NewPCG(c.seed, uint64(w)+1))
			if p.write {
				streams.caller(runCtx, cc, rng, t)
				return
			}
			for !stop.Load() {
				start := time.Since(base)
				var items int
				var err error
				if p.versions {
					var version uint64
					version, err = callPut(runCtx, cc, p, p.next(rng))
					items = p.itemsPerOp
					if err == nil && version != 0 {
						noteVersion(t.spans, version, int64(start), int64(time.Since(base)))
					}
				} else {
					items, err = call(runCtx, cc, p, p.next(rng))
				}
				elapsed := time.Since(base) - start
				ws := windowStart.Load()
				measured := ws != 0 && int64(start) >= ws
				switch {
				case err != nil && measured:
					t.errors[status.Code(err)]++
				case err != nil:
					t.warmupErrors++
				case measured:
					t.ops++
					t.items += int64(items)
					t.latencies = append(t.latencies, int64(elapsed))
				default:
					t.warmupOps++
				}
				if err != nil {
					// Do not spin on a server that is down; the loop still ends on stop.
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	allDone := make(chan struct{})
	go func() {
		wg.Wait()
		close(allDone)
	}()

	time.Sleep(c.warmup)
	if watchers != nil {
		lastOpen, err := watchers.awaitOpen(watchOpenTimeout)
		if err != nil {
			stop.Store(true)
			<-allDone
			watchers.cancel()
			return fmt.Errorf("watchers: %v", err)
		}
		res.Watch.OpenS = time.Duration(lastOpen).Seconds()
	}
	if c.handshake {
		res.HandshakeTimedOut = awaitGo()
	}
	windowAt := time.Since(base)
	windowStart.Store(max(int64(windowAt), 1))
	cpuBefore := cpuSeconds()
	select {
	case <-time.After(c.duration):
	case <-allDone:
	}
	stop.Store(true)
	<-allDone
	windowEnd := time.Since(base)
	res.ClientCPUS = cpuSeconds() - cpuBefore
	if c.handshake {
		fmt.Fprintln(os.Stderr, "loadgen: done")
	}

	var all []int64
	for _, t := range tallies {
		res.Ops += t.ops
		res.Items += t.items
		res.WarmupOps += t.warmupOps
		res.WarmupErrors += t.warmupErrors
		for code, n := range t.errors {
			res.Errors[code.String()] += n
			res.ErrorsTotal += n
		}
		all = append(all, t.latencies...)
	}
	res.WindowS = (windowEnd - windowAt).Seconds()
	if res.WindowS > 0 {
		res.OpsPerS = float64(res.Ops) / res.WindowS
		res.ItemsPerS = float64(res.Items) / res.WindowS
	}
	if res.Ops > 0 {
		res.ClientCPUUsPerOp = res.ClientCPUS * 1e6 / float64(res.Ops)
	}
	res.LatencyUs = summarize(all)
	if watchers != nil {
		parts := make([]map[uint64]versionSpan, 0, len(tallies))
		for _, t := range tallies {
			parts = append(parts, t.spans)
		}
		spans := mergeSpans(parts)
		ws := windowStart.Load()
		versions, last := windowVersions(spans, ws)
		res.Watch.BehindAtEnd = watchers.drain(last, min(c.grace, watchDrainMax))
		watchers.stop(spans, ws, versions, res.Watch)
		for code, n := range res.Watch.EndedEarly {
			res.Errors["watch_"+code] += n
			res.ErrorsTotal += n
		}
	}

	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(res); err != nil {
		return err
	}
	if res.Ops == 0 {
		return fmt.Errorf("no call succeeded in the window (errors: %s)", formatErrors(res.Errors))
	}
	return nil
}

// summarize returns latency percentiles in microseconds (nearest rank).
func summarize(ns []int64) latency {
	if len(ns) == 0 {
		return latency{}
	}
	slices.Sort(ns)
	rank := func(q float64) float64 {
		i := int(q*float64(len(ns))+0.5) - 1
		i = min(max(i, 0), len(ns)-1)
		return float64(ns[i]) / 1e3
	}
	var sum float64
	for _, v := range ns {
		sum += float64(v)
	}
	return latency{P50: rank(0.50), P90: rank(0.90), P99: rank(0.99), Max: float64(ns[len(ns)-1]) / 1e3, Mean: sum / float64(len(ns)) / 1e3}
}

func formatErrors(errs map[string]int) string {
	parts := make([]string, 0, len(errs))
	for code, n := range errs {
		parts = append(parts, fmt.Sprintf("%s=%d", code, n))
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}
