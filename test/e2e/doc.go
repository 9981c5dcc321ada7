// Package e2e holds Keyward's end-to-end tests. They build the real
// keyward binary once, run it as a separate process on loopback ports, and
// drive it the way users do: with curl, jq and grpcurl (the README's
// walk-throughs, verbatim), and with plain HTTP clients.
//
// Postgres-backed cases, and cases needing curl, jq or grpcurl, follow the
// rule of internal/testenv: skipped loudly when missing, fatal when CI=true.
//
// TestRevocationAcrossInstances and TestFaults run several instances over
// one Postgres database and a private redis-server each (the redis-server
// binary must be on PATH, same rule), and take dependencies away under load:
// SIGKILL and SIGSTOP of Redis or of an instance, and a TCP proxy
// (testenv.Proxy) that cuts or stalls Postgres. They print their figures
// with -v; -short runs fewer revocation trials.
//
// TestConsole drives the web console in headless Chromium through chromedp
// (the chromium binary must be on PATH, same rule) and saves screenshots to
// $KEYWARD_ARTIFACTS/console.
package e2e
