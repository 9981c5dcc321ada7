// Package usage counts verifications per key, hour and outcome, and
// remembers when each key was last used successfully, without writing to the
// store on the hot path: Recorder.Used only adds to counters in memory, and
// Recorder.Run writes everything counted since the last flush in one
// store.RecordUsage call per interval — so at most one write per key per
// interval, however often the key is verified.
//
// What a process had counted but not yet written when it was killed is
// lost (at most one interval's worth); a graceful stop flushes first. A
// flush that fails is merged back and retried with the next one. Memory is
// bounded: see Options.MaxKeys and maxHours.
package usage
