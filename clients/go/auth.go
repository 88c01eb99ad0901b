// Package metadataclient holds the hand-written helpers of the Go client; the messages and
// stubs are generated into gen/. These helpers connect to a server that requires a bearer token
// (--auth-tokens) or a client certificate (--tls-client-ca):
//
//	creds, err := metadataclient.TLSCredentials("ca.pem", "me.pem", "me.key") // or "", "" for no client cert
//	conn, err := grpc.NewClient("db.example.com:50051",
//		grpc.WithTransportCredentials(creds),
//		grpc.WithPerRPCCredentials(metadataclient.TokenCredentials(os.Getenv("METADATA_TOKEN"), false)))
//
// The token is sent as "authorization: Bearer <token>" metadata on every call and never logged.
package metadataclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"google.golang.org/grpc/credentials"
)

// tokenCredentials implements credentials.PerRPCCredentials for a bearer token.
type tokenCredentials struct {
	header        string
	allowInsecure bool
}

// TokenCredentials returns per-RPC credentials that send "authorization: Bearer <token>".
// grpc-go refuses to send them over a connection without TLS unless allowInsecure is true,
// which only suits a server on loopback.
func TokenCredentials(token string, allowInsecure bool) credentials.PerRPCCredentials {
	return tokenCredentials{header: "Bearer " + token, allowInsecure: allowInsecure}
}

func (c tokenCredentials) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": c.header}, nil
}

func (c tokenCredentials) RequireTransportSecurity() bool { return !c.allowInsecure }

// TLSCredentials returns transport credentials trusting the PEM CA certificates in caFile (the
// system roots when caFile is ""), presenting the client certificate in certFile and keyFile
// when both are given (mutual TLS). It fails when a file cannot be read or parsed, or when only
// one of certFile and keyFile is given.
func TLSCredentials(caFile, certFile, keyFile string) (credentials.TransportCredentials, error) {
	config := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("read CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("no PEM certificate in %s", caFile)
		}
		config.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("certFile and keyFile go together")
	}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("load client certificate: %w", err)
		}
		config.Certificates = []tls.Certificate{pair}
	}
	return credentials.NewTLS(config), nil
}
