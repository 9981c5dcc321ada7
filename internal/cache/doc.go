// Package cache puts two tiers in front of the store for Validate: an
// in-process map and Redis, both keyed by the SHA-256 of a secret (never
// the secret), both version-guarded, and kept coherent across instances so
// that a revocation is in force everywhere once its RPC returns.
//
// The protocol, in short (see coordinator.go for the argument):
//   - Before a write commits, the writer marks the affected hash "pending" in
//     Redis (readers then bypass every cache for it), publishes an
//     invalidation, and waits until every subscribed instance has dropped its
//     copy and acknowledged, or until an unresponsive instance's lease has
//     surely run out.
//   - After the commit, the writer replaces the marker with the new snapshot.
//     If the marker is gone by then (Redis restarted empty, failed over or
//     evicted it), a reader may have cached the row as it was before the
//     commit, so the writer announces the invalidation again before it
//     returns.
//   - An instance trusts its in-process copies only while its lease is fresh:
//     it pings its own subscription connection every HeartbeatInterval, and a
//     pong for a ping sent at local time s proves that every invalidation
//     published before s has been applied. Only intervals of one clock are
//     compared.
//   - A fill (a miss answered by Redis or the store) is cached only if no
//     invalidation touched its hash while it was in flight.
package cache
