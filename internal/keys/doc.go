// Package keys holds Keyward's domain types and errors. It does no I/O and
// knows nothing of protobuf or gRPC, so the store, the verifier and the
// transport can all depend on it without depending on each other.
package keys
