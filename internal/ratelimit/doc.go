// Package ratelimit enforces a key's rate limit (keys.RateLimit: Limit
// requests per Period, in bursts of up to Burst) with GCRA, the generic cell
// rate algorithm: in Redis, shared by every instance, and in process for the
// embedded mode and as the fallback when Redis fails.
//
// # The algorithm
//
// GCRA keeps one number per key: the theoretical arrival time (TAT), when
// the key's limit will be fully available again. Requests are spaced by the
// emission interval T = Period/Limit, and may arrive early by up to
// (Burst-1)·T. A request at time now is judged by
//
//	tat      = max(stored TAT, now)
//	newTAT   = tat + T
//	allowAt  = newTAT - Burst·T
//	now < allowAt: refused, retry after allowAt-now; nothing is stored
//	otherwise:     allowed, store newTAT
//
// so a fresh key can make Burst requests at once and then one every T, and an
// idle key earns its burst back at the same rate. One number per key means
// one small Redis value per key, one read-modify-write per request, and no
// cleanup: the value is worthless once its TAT has passed, so it expires then
// (an absent key and a TAT in the past mean the same). Remaining is how many
// more requests the TAT admits right now, ResetAfter is TAT-now. A changed
// limit needs no migration: the stored TAT is read with the new T and Burst.
//
// Times are integer microseconds, because the Redis script computes in Lua
// doubles: Unix microseconds are far below 2^53 and stay exact, and TATs are
// kept within 2^52 µs (about 142 years) of now by capping Burst·T. A limit
// faster than one request per microsecond is enforced as one per microsecond.
//
// # Why Redis's clock
//
// The script reads the time with redis.call('TIME') instead of taking it from
// the caller. All instances then judge a key by the one clock of the Redis
// node that owns it, so a skewed or stepped instance clock can neither hand
// out extra requests nor lock a key out, and the read, the decision and the
// write are one atomic step in one round trip. (A failover to a replica with
// a slightly different clock shifts the key's timeline by that difference,
// once.) The in-process limiter uses the monotonic clock for the same reason.
//
// # Failures
//
// Redis (the Redis limiter) returns an error when Redis fails; Fallback turns
// that into a decision chosen by configuration — allow, deny, or enforce the
// limit per instance in process — skips Redis for a second after a failure
// so that an outage costs one timeout per second rather than one per
// request, and logs only when Redis goes away or comes back.
package ratelimit
