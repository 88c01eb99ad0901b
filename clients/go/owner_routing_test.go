package metadataclient_test

// Owner routing as the README ("Deployment on etcd", Clients) documents it for Go: a client given
// both servers of an etcd-backed pair, with the round_robin + healthCheckConfig service config and
// the health checker registered by importing google.golang.org/grpc/health, sends its calls to
// the owner only (the standby reports NOT_SERVING), and after the owner is SIGKILLed, to the
// standby once it took over, with no change on the client's side. Runs a real single-member etcd
// (Debian's etcd-server) on free 127.0.0.1 ports; skipped, saying why, when etcd is not installed.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	metadatav1 "github.com/commonware-metadata/clients/go/gen/commonware/metadata/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/health" // registers the client-side health checker
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"
)

// ownerServiceConfig is the service config of the README, byte for byte.
const ownerServiceConfig = `{
  "loadBalancingConfig": [{ "round_robin": {} }],
  "healthCheckConfig": { "serviceName": "commonware.metadata.v1.MetadataService" }
}`

const (
	// leaseTTL is the servers' --etcd-lease-ttl-seconds.
	leaseTTL = 2 * time.Second
	// takeoverBound is how long after the owner's SIGKILL a Put must succeed again: the lease
	// TTL, then the standby's election and its health watch turning SERVING.
	takeoverBound = leaseTTL + 4*time.Second
	// etcdStartTimeout bounds the wait for etcd to report itself healthy.
	etcdStartTimeout = 30 * time.Second
)

// startEtcd runs a single-member etcd on free 127.0.0.1 ports with its data in a test temporary
// directory, killed at the end of the test, and returns its client endpoint (host:port). Skips
// the test when no etcd binary is on PATH.
func startEtcd(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("etcd"); err != nil {
		t.Skip("etcd is not installed (run scripts/install-etcd.sh as root: Debian's etcd-server)")
	}
	dir := t.TempDir()
	endpoint := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	clientURL := "http://" + endpoint
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	cmd := exec.Command("etcd",
		"--name=m0",
		"--data-dir="+filepath.Join(dir, "m0"),
		"--listen-client-urls="+clientURL,
		"--advertise-client-urls="+clientURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=m0="+peerURL,
		"--initial-cluster-state=new",
		"--logger=zap",
		"--log-outputs=stderr",
		"--log-level=warn",
	)
	output := &lockedBuffer{}
	cmd.Stdout = output
	cmd.Stderr = output
	setDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatalf("run etcd: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("etcd output:\n%s", output.String())
		}
	})
	// etcd answers /health with {"health":"true"} once the member has a leader and serves.
	httpClient := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(etcdStartTimeout)
	for {
		select {
		case <-exited:
			t.Fatalf("etcd exited before serving:\n%s", output.String())
		default:
		}
		if resp, err := httpClient.Get(clientURL + "/health"); err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(body), `"health":"true"`) {
				return endpoint
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd not healthy on %s after %v:\n%s", endpoint, etcdStartTimeout, output.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// healthOf is the server's health status for MetadataService, asked directly (no load balancing).
func healthOf(t *testing.T, s *testServer) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	reply, err := healthpb.NewHealthClient(s.conn).Check(ctx(t), &healthpb.HealthCheckRequest{
		Service: metadatav1.MetadataService_ServiceDesc.ServiceName,
	})
	requireOK(t, err, "health check of "+s.addr)
	return reply.GetStatus()
}

func TestOwnerRoutingByHealthOverEtcd(t *testing.T) {
	endpoint := startEtcd(t)
	flags := []string{
		"--storage", "etcd",
		"--etcd-endpoints", endpoint,
		"--etcd-prefix", fmt.Sprintf("go-owner-routing-%d", time.Now().UnixNano()),
		"--etcd-lease-ttl-seconds", fmt.Sprint(int(leaseTTL / time.Second)),
	}
	// The first server to start owns the prefix; the second is its standby.
	owner := startServer(t, "", flags...)
	standby := startAnsweringServer(t, "", flags...)
	if got := healthOf(t, standby); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("second server's health: %v, want NOT_SERVING (a standby)", got)
	}
	const partition = "routing"
	// Without routing a call to the standby fails, naming the owner.
	_, err := standby.client.Put(ctx(t), &metadatav1.PutRequest{Partition: partition, Key: []byte("x"), Value: []byte("y")})
	requireCode(t, err, codes.Unavailable, "Put on the standby")
	if want := "the owner is " + owner.addr; !strings.HasSuffix(status.Convert(err).Message(), want) {
		t.Fatalf("standby's refusal %q does not end with %q", status.Convert(err).Message(), want)
	}

	// The client of the README: both addresses, the standby first (round_robin without health
	// checking would send every other call to it).
	r := manual.NewBuilderWithScheme("metadata-owner")
	r.InitialState(resolver.State{Endpoints: []resolver.Endpoint{
		{Addresses: []resolver.Address{{Addr: standby.addr}}},
		{Addresses: []resolver.Address{{Addr: owner.addr}}},
	}})
	conn, err := grpc.NewClient(r.Scheme()+":///metadata",
		grpc.WithResolvers(r),
		grpc.WithDefaultServiceConfig(ownerServiceConfig),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	)
	requireOK(t, err, "NewClient")
	t.Cleanup(func() { conn.Close() })
	client := metadatav1.NewMetadataServiceClient(conn)

	acked := map[string]string{}
	putDurable := func(key, value string, timeout time.Duration) error {
		c, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		reply, err := client.Put(c, &metadatav1.PutRequest{
			Partition: partition, Key: []byte(key), Value: []byte(value),
			Durability: metadatav1.Durability_DURABILITY_DURABLE,
		})
		if err != nil {
			return err
		}
		if reply.GetVersion() == 0 {
			return fmt.Errorf("durable Put %s answered version 0", key)
		}
		acked[key] = value
		return nil
	}
	// Every call succeeds at the first attempt: each one went to the owner.
	for i := range 20 {
		requireOK(t, putDurable(fmt.Sprintf("a%02d", i), fmt.Sprintf("owner-%d", i), callTimeout), "Put through the owner")
	}

	if err := owner.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("SIGKILL the owner: %v", err)
	}
	killed := time.Now()
	<-owner.exited

	// Until the lease expires and the standby takes over, calls fail UNAVAILABLE (no server
	// reports SERVING); then the same client reaches the new owner.
	var lastErr error
	attempts := 0
	for {
		attempts++
		err := putDurable("failover", "standby", time.Second)
		if err == nil {
			break
		}
		if code := status.Code(err); code != codes.Unavailable && code != codes.DeadlineExceeded {
			t.Fatalf("Put during the failover: %v, want UNAVAILABLE or DEADLINE_EXCEEDED", err)
		}
		lastErr = err
		if time.Since(killed) > takeoverBound {
			t.Fatalf("no Put succeeded within %v of the owner's SIGKILL (%d attempts, last: %v)", takeoverBound, attempts, lastErr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("first Put through the new owner %v after the SIGKILL (%d attempts, last error: %v)", time.Since(killed), attempts, lastErr)
	if got := healthOf(t, standby); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("former standby's health after the takeover: %v, want SERVING", got)
	}
	for i := range 20 {
		requireOK(t, putDurable(fmt.Sprintf("b%02d", i), fmt.Sprintf("standby-%d", i), callTimeout), "Put through the new owner")
	}

	// Every acknowledged Put, the owner's and the new owner's, reads back through the same client.
	for key, want := range acked {
		reply, err := client.Get(ctx(t), &metadatav1.GetRequest{Partition: partition, Key: []byte(key)})
		requireOK(t, err, "Get "+key)
		if got := reply.GetValue(); got == nil || string(got) != want {
			t.Fatalf("Get %s: %q (nil when absent), want %q", key, got, want)
		}
	}
}
