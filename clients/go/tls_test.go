package metadataclient_test

// Mutual TLS with TLSCredentials: a throwaway CA, server and client certificates made with
// crypto/x509, a server started with --tls-cert, --tls-key, --tls-client-ca and --auth-tokens
// whose client_cert entry grants the client certificate, and calls with the certificate alone,
// with a token over TLS (TokenCredentials), and without a client certificate (refused at the
// handshake).

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	metadataclient "github.com/commonware-metadata/clients/go"
	metadatav1 "github.com/commonware-metadata/clients/go/gen/commonware/metadata/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
)

// issued is a certificate and its key, written as PEM files.
type issued struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM string
	keyPEM  string
}

// issue makes a certificate from template, signed by parent (self-signed when nil), in dir.
func issue(t *testing.T, dir, name string, template *x509.Certificate, parent *issued) *issued {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	requireOK(t, err, "generate key")
	template.SerialNumber = big.NewInt(time.Now().UnixNano())
	template.NotBefore = time.Now().Add(-time.Hour)
	template.NotAfter = time.Now().Add(24 * time.Hour)
	signer, signerKey := template, key
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, template, signer, &key.PublicKey, signerKey)
	requireOK(t, err, "create certificate")
	cert, err := x509.ParseCertificate(der)
	requireOK(t, err, "parse certificate")
	keyDER, err := x509.MarshalECPrivateKey(key)
	requireOK(t, err, "marshal key")
	out := &issued{cert: cert, key: key, certPEM: filepath.Join(dir, name+".crt"), keyPEM: filepath.Join(dir, name+".key")}
	requireOK(t, os.WriteFile(out.certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600), "write cert")
	requireOK(t, os.WriteFile(out.keyPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600), "write key")
	return out
}

// startTLSServer runs the server with flags and waits for its listening line (the harness's
// health check speaks plaintext, which a TLS-only server refuses).
func startTLSServer(t *testing.T, flags ...string) string {
	t.Helper()
	node := os.Getenv("NODE")
	if node == "" {
		node = "node"
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	args := append([]string{"--import", "tsx", filepath.Join("server", "main.ts"),
		"--data-dir", t.TempDir(), "--listen", addr, "--metrics-listen", "off"}, flags...)
	cmd := exec.Command(node, args...)
	cmd.Dir = repoRoot(t)
	cmd.Env = serverEnv()
	output := &lockedBuffer{}
	cmd.Stdout = output
	cmd.Stderr = output
	setDeathSignal(cmd)
	requireOK(t, cmd.Start(), "start server")
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("server output:\n%s", output.String())
		}
	})
	deadline := time.Now().Add(startTimeout)
	for !strings.Contains(output.String(), "listening on") {
		if time.Now().After(deadline) {
			t.Fatalf("server not listening after %v:\n%s", startTimeout, output.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return addr
}

func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := issue(t, dir, "ca", &x509.Certificate{
		Subject: pkix.Name{CommonName: "test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}, nil)
	server := issue(t, dir, "server", &x509.Certificate{
		Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}, ca)
	client := issue(t, dir, "client", &x509.Certificate{
		Subject: pkix.Name{CommonName: "go-client"}, DNSNames: []string{"go-client.example"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}, ca)
	const token = "go-tls-admin-token"
	tokens := filepath.Join(dir, "tokens.json")
	requireOK(t, os.WriteFile(tokens, []byte(fmt.Sprintf(`{"tokens": [
		{"name": "go-client", "client_cert": "DNS:go-client.example", "grants": [{"partitions": "certs", "access": "write"}]},
		{"name": "admin", "sha256": %q, "grants": [{"partitions": "*", "access": "admin"}]}
	]}`, sha256Hex(token))), 0o600), "write tokens file")
	addr := startTLSServer(t, "--tls-cert", server.certPEM, "--tls-key", server.keyPEM,
		"--tls-client-ca", ca.certPEM, "--auth-tokens", tokens)

	connect := func(creds credentials.TransportCredentials, opts ...grpc.DialOption) metadatav1.MetadataServiceClient {
		conn, err := grpc.NewClient(addr, append(opts, grpc.WithTransportCredentials(creds))...)
		requireOK(t, err, "connect")
		t.Cleanup(func() { conn.Close() })
		return metadatav1.NewMetadataServiceClient(conn)
	}
	withCert, err := metadataclient.TLSCredentials(ca.certPEM, client.certPEM, client.keyPEM)
	requireOK(t, err, "TLSCredentials")
	certOnly := connect(withCert)
	_, err = certOnly.Put(ctx(t), &metadatav1.PutRequest{Partition: "certs", Key: []byte("k"), Value: []byte("v")})
	requireOK(t, err, "Put with the granted certificate")
	_, err = certOnly.Put(ctx(t), &metadatav1.PutRequest{Partition: "other", Key: []byte("k"), Value: []byte("v")})
	requireCode(t, err, codes.PermissionDenied, "Put outside the certificate's grant")

	admin := connect(withCert, grpc.WithPerRPCCredentials(metadataclient.TokenCredentials(token, false)))
	_, err = admin.Put(ctx(t), &metadatav1.PutRequest{Partition: "other", Key: []byte("k"), Value: []byte("v")})
	requireOK(t, err, "Put with the admin token over TLS")

	noCert, err := metadataclient.TLSCredentials(ca.certPEM, "", "")
	requireOK(t, err, "TLSCredentials without a client certificate")
	_, err = connect(noCert).Get(ctx(t), &metadatav1.GetRequest{Partition: "certs", Key: []byte("k")})
	requireCode(t, err, codes.Unavailable, "Get without a client certificate")

	if _, err := metadataclient.TLSCredentials(ca.certPEM, client.certPEM, ""); err == nil {
		t.Fatal("TLSCredentials with a certificate and no key: no error")
	}
}
