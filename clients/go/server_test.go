package metadataclient_test

// Test harness: runs the real TypeScript server (`node --import tsx server/main.ts`, from the
// repository root found relative to this file) on a free 127.0.0.1 port with its data in a test
// temporary directory, waits until it answers gRPC health checks (SERVING, or any status for a
// standby of the etcd backend: startAnsweringServer), and connects the generated Go client to it. The process is stopped with SIGTERM by stop() (which checks it exits 0) and
// killed at the end of the test in any case; on Linux it also dies with the test binary
// (procattr_linux_test.go), so a test timeout leaves no server behind.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metadatav1 "github.com/commonware-metadata/clients/go/gen/commonware/metadata/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

const (
	// startTimeout bounds the wait for a started server to answer a health check.
	startTimeout = 60 * time.Second
	// stopTimeout bounds the wait for a server to exit after SIGTERM.
	stopTimeout = 30 * time.Second
	// callTimeout is the deadline of every RPC made by the tests.
	callTimeout = 15 * time.Second
	// startAttempts is how often a server is started on a new port when its port was taken
	// between being picked and being bound.
	startAttempts = 3
)

// repoRoot is the repository root: two directories above this file (clients/go).
func repoRoot(t testing.TB) string {
	t.Helper()
	var candidates []string
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		candidates = append(candidates, filepath.Join(filepath.Dir(file), "..", ".."))
	}
	// `go test` runs in the package directory; this covers builds with -trimpath.
	if wd, err := os.Getwd(); err == nil {
		candidates = append(candidates, filepath.Join(wd, "..", ".."))
	}
	for _, dir := range candidates {
		if _, err := os.Stat(filepath.Join(dir, "server", "main.ts")); err == nil {
			abs, err := filepath.Abs(dir)
			if err != nil {
				t.Fatalf("abs %s: %v", dir, err)
			}
			return abs
		}
	}
	t.Fatalf("repository root with server/main.ts not found from %v", candidates)
	return ""
}

// lockedBuffer collects the server's output from two pipes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testServer is one running server process and a client connected to it.
type testServer struct {
	t       *testing.T
	dataDir string
	flags   []string
	addr    string
	cmd     *exec.Cmd
	output  *lockedBuffer
	exited  chan struct{}
	waitErr error
	conn    *grpc.ClientConn
	client  metadatav1.MetadataServiceClient
}

// freePort returns a port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("pick a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// serverEnv is the environment without METADATA_* variables, so only the flags configure it.
func serverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "METADATA_") {
			env = append(env, kv)
		}
	}
	return env
}

// startServer starts a server on dataDir (a fresh t.TempDir() when empty) with extra flags, and
// waits until its health check answers SERVING.
func startServer(t *testing.T, dataDir string, flags ...string) *testServer {
	t.Helper()
	return startServerUntil(t, dataDir, true, flags)
}

// startAnsweringServer is startServer for a server that may be a standby of the etcd backend: it
// waits until the health check answers at all (SERVING or NOT_SERVING), since a standby reports
// NOT_SERVING for as long as another server owns the partitions.
func startAnsweringServer(t *testing.T, dataDir string, flags ...string) *testServer {
	t.Helper()
	return startServerUntil(t, dataDir, false, flags)
}

func startServerUntil(t *testing.T, dataDir string, serving bool, flags []string) *testServer {
	t.Helper()
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	var lastErr error
	for attempt := 0; attempt < startAttempts; attempt++ {
		s, err := tryStart(t, dataDir, serving, flags)
		if err == nil {
			return s
		}
		lastErr = err
		if !strings.Contains(err.Error(), "EADDRINUSE") {
			break
		}
		t.Logf("port taken, retrying: %v", err)
	}
	t.Fatalf("start server: %v", lastErr)
	return nil
}

func tryStart(t *testing.T, dataDir string, serving bool, flags []string) (*testServer, error) {
	root := repoRoot(t)
	node := os.Getenv("NODE")
	if node == "" {
		node = "node"
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	args := append([]string{
		"--import", "tsx", filepath.Join("server", "main.ts"),
		"--data-dir", dataDir,
		"--listen", addr,
		"--metrics-listen", "off",
	}, flags...)
	cmd := exec.Command(node, args...)
	cmd.Dir = root
	cmd.Env = serverEnv()
	output := &lockedBuffer{}
	cmd.Stdout = output
	cmd.Stderr = output
	setDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %s: %w", node, err)
	}
	s := &testServer{
		t: t, dataDir: dataDir, flags: flags, addr: addr, cmd: cmd, output: output,
		exited: make(chan struct{}),
	}
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		s.kill()
		if t.Failed() {
			t.Logf("server %s output:\n%s", s.addr, s.output.String())
		}
	})
	if err := s.waitReady(serving); err != nil {
		s.kill()
		return nil, err
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		s.kill()
		return nil, fmt.Errorf("connect: %w", err)
	}
	t.Cleanup(func() { conn.Close() })
	s.conn = conn
	s.client = metadatav1.NewMetadataServiceClient(conn)
	return s, nil
}

// waitReady polls until the server answers a health check (SERVING when serving is set), or
// fails if it exits.
func (s *testServer) waitReady(serving bool) error {
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-s.exited:
			return fmt.Errorf("server exited before serving (%v):\n%s", s.waitErr, s.output.String())
		default:
		}
		if d, err := net.DialTimeout("tcp", s.addr, time.Second); err == nil {
			d.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			reply, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: metadatav1.MetadataService_ServiceDesc.ServiceName})
			cancel()
			if err == nil && (!serving || reply.GetStatus() == healthpb.HealthCheckResponse_SERVING) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("server not ready on %s after %v:\n%s", s.addr, startTimeout, s.output.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM and requires a clean exit (status 0) within stopTimeout.
func (s *testServer) stop() {
	s.t.Helper()
	s.conn.Close()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		s.t.Fatalf("SIGTERM: %v", err)
	}
	select {
	case <-s.exited:
	case <-time.After(stopTimeout):
		s.kill()
		s.t.Fatalf("server did not exit within %v of SIGTERM:\n%s", stopTimeout, s.output.String())
	}
	if s.waitErr != nil {
		s.t.Fatalf("server exited with %v after SIGTERM:\n%s", s.waitErr, s.output.String())
	}
}

// restart stops the server with SIGTERM and starts a new one on the same data dir and flags.
func (s *testServer) restart() *testServer {
	s.t.Helper()
	began := time.Now()
	s.stop()
	stopped := time.Now()
	next := startServer(s.t, s.dataDir, s.flags...)
	s.t.Logf("restart: SIGTERM to exit %v, start to serving %v", stopped.Sub(began), time.Since(stopped))
	return next
}

// kill ends the process at once (no-op once it has exited) and waits for it.
func (s *testServer) kill() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Kill()
	select {
	case <-s.exited:
	case <-time.After(stopTimeout):
	}
}

// ctx is a context with the per-call deadline, cancelled at the end of the test.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), callTimeout)
	t.Cleanup(cancel)
	return c
}
