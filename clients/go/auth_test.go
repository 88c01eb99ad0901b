package metadataclient_test

// Bearer tokens against a server started with --auth-tokens: no token and an unknown token are
// UNAUTHENTICATED, a read token reads but cannot write (PERMISSION_DENIED naming the partition),
// a write token writes within its grant only.

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	metadataclient "github.com/commonware-metadata/clients/go"
	metadatav1 "github.com/commonware-metadata/clients/go/gen/commonware/metadata/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

func sha256Hex(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// clientWithToken connects to s with token on every call ("" for none).
func clientWithToken(t *testing.T, s *testServer, token string) metadatav1.MetadataServiceClient {
	t.Helper()
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(metadataclient.TokenCredentials(token, true)))
	}
	conn, err := grpc.NewClient(s.addr, opts...)
	requireOK(t, err, "connect")
	t.Cleanup(func() { conn.Close() })
	return metadatav1.NewMetadataServiceClient(conn)
}

func TestBearerTokens(t *testing.T) {
	const readToken, writeToken = "go-read-token", "go-write-token"
	tokens := filepath.Join(t.TempDir(), "tokens.json")
	policy := fmt.Sprintf(`{"tokens": [
		{"name": "reader", "sha256": %q, "grants": [{"partitions": "team-*", "access": "read"}]},
		{"name": "writer", "sha256": %q, "grants": [{"partitions": "team-a", "access": "write"}]}
	]}`, sha256Hex(readToken), sha256Hex(writeToken))
	requireOK(t, os.WriteFile(tokens, []byte(policy), 0o600), "write tokens file")
	s := startServer(t, "", "--auth-tokens", tokens)

	put := &metadatav1.PutRequest{Partition: "team-a", Key: []byte("k"), Value: []byte("v")}
	get := &metadatav1.GetRequest{Partition: "team-a", Key: []byte("k")}

	_, err := clientWithToken(t, s, "").Get(ctx(t), get)
	requireCode(t, err, codes.Unauthenticated, "Get without a token")
	_, err = clientWithToken(t, s, "not-a-token").Get(ctx(t), get)
	requireCode(t, err, codes.Unauthenticated, "Get with an unknown token")

	reader := clientWithToken(t, s, readToken)
	_, err = reader.Put(ctx(t), put)
	requireCode(t, err, codes.PermissionDenied, "Put with a read token")
	if msg := status.Convert(err).Message(); !strings.Contains(msg, `"team-a"`) || !strings.Contains(msg, "write") {
		t.Fatalf("PERMISSION_DENIED message %q should name the partition and the access", msg)
	}

	writer := clientWithToken(t, s, writeToken)
	_, err = writer.Put(ctx(t), put)
	requireOK(t, err, "Put with a write token")
	_, err = writer.Put(ctx(t), &metadatav1.PutRequest{Partition: "team-b", Key: []byte("k"), Value: []byte("v")})
	requireCode(t, err, codes.PermissionDenied, "Put outside the write grant")

	reply, err := reader.Get(ctx(t), get)
	requireOK(t, err, "Get with a read token")
	if string(reply.GetValue()) != "v" {
		t.Fatalf("Get = %q, want v", reply.GetValue())
	}
	if strings.Contains(s.output.String(), writeToken) || strings.Contains(s.output.String(), readToken) {
		t.Fatalf("server output holds a token:\n%s", s.output.String())
	}
}
