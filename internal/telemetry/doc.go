// Package telemetry is Keyward's observability: Prometheus metrics served at
// /metrics, and OpenTelemetry tracing when the standard OTEL_* environment
// asks for it. It is the one package that imports prometheus and
// OpenTelemetry; the core reports through small observer interfaces that its
// consumers declare (validate.Observer, cache.Observer, server.Observer), so
// it never learns a secret, and labels stay bounded: no key material, key
// ids, client addresses or raw paths, only names from fixed sets.
//
// Everything is per instance: Metrics has its own registry and Tracing its
// own tracer provider, so tests can run several Keywards in one process.
package telemetry
