// Package server runs Keyward's two listeners: gRPC (KeyService, health,
// reflection) and HTTP (the REST gateway, OpenAPI, health probes). The
// gateway dials the gRPC listener, so REST calls pass the same interceptors
// for authentication, error mapping and logging.
package server
