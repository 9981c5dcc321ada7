// Package e2e holds Keyward's end-to-end tests. They build the real
// keyward binary once, run it as a separate process on loopback ports, and
// drive it the way users do: with curl, jq and grpcurl (the README's
// walk-throughs, verbatim), and with plain HTTP clients.
//
// Postgres-backed cases, and cases needing curl, jq or grpcurl, follow the
// rule of internal/testenv: skipped loudly when missing, fatal when CI=true.
package e2e
