package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
)

// client dials the server. admin says whether the call needs the admin key:
// Validate does not, and then the key is not sent at all.
func (c *keysCmd) client(ctx context.Context, admin bool) (keywardv1.KeyServiceClient, context.Context, func(), error) {
	if admin {
		token, err := c.adminToken()
		if err != nil {
			return nil, nil, nil, err
		}
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	creds, err := c.transport()
	if err != nil {
		return nil, nil, nil, err
	}
	conn, err := grpc.NewClient(c.server, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, nil, nil, usageError("--server %q: %v", c.server, err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	return keywardv1.NewKeyServiceClient(conn), ctx, func() { cancel(); conn.Close() }, nil
}

// transport is plaintext unless asked for TLS: a local or port-forwarded
// server is the common case, and the server's own default is plaintext.
func (c *keysCmd) transport() (credentials.TransportCredentials, error) {
	if !c.tls && c.tlsCAFile == "" {
		return insecure.NewCredentials(), nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.tlsCAFile != "" {
		pem, err := os.ReadFile(c.tlsCAFile)
		if err != nil {
			return nil, usageError("--tls-ca-file: %v", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, usageError("--tls-ca-file %s: no PEM certificate in it", c.tlsCAFile)
		}
	}
	return credentials.NewTLS(cfg), nil
}

func (c *keysCmd) adminToken() (string, error) {
	token := os.Getenv("KEYWARD_ADMIN_KEY")
	if c.adminKeyFile != "" {
		b, err := os.ReadFile(c.adminKeyFile)
		if err != nil {
			return "", &exitError{code: exitUnauthorized, err: fmt.Errorf("read admin key: %w", err)}
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		return "", &exitError{code: exitUnauthorized, err: errors.New("no admin key: set KEYWARD_ADMIN_KEY or pass --admin-key-file")}
	}
	return token, nil
}

// call runs one admin RPC and prints its answer.
func (c *keysCmd) call(ctx context.Context, rpc func(context.Context, keywardv1.KeyServiceClient) (proto.Message, error)) error {
	kc, ctx, done, err := c.client(ctx, true)
	if err != nil {
		return err
	}
	defer done()
	resp, err := rpc(ctx, kc)
	if err != nil {
		return rpcError("keys "+c.sub, err)
	}
	return c.print(resp)
}
