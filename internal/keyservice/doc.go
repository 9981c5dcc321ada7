// Package keyservice implements keyward.v1.KeyService: it validates every
// request, turns it into store operations, and after every successful write
// calls afterWrite — the one place caches learn about changes. It returns
// domain errors (internal/keys); the server maps them to status codes.
package keyservice
