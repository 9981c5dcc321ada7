// Package server runs Keyward's two listeners: gRPC (KeyService, health,
// reflection) and HTTP (the REST gateway, OpenAPI, health probes). The
// gateway is a client of the same grpc.Server, through an in-memory listener
// (tls.go), so REST calls pass the same interceptors for authentication,
// error mapping and logging. Both listeners can serve TLS from reloadable
// files; the gRPC listener can demand client certificates (mtls.go).
package server
