// Package deploy has no code of its own: its tests check the files in
// deploy/ without a container engine or a cluster, and without reaching
// GitHub. The Kubernetes manifests are built with kustomize in-process and
// checked against the Kubernetes OpenAPI document of the k8s.io/api version
// in go.mod (fetched by `make k8s-openapi` from the Go module proxy), decoded
// strictly into k8s.io/api types and checked for consistency; compose.yaml is
// loaded by the Compose specification's own loader; the Dockerfile is parsed
// and linted by BuildKit's frontend, and its build stage is replayed with the
// same `go build` line; the compose nginx config runs in a real nginx.
package deploy
