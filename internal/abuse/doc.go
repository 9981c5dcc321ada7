// Package abuse keeps people who guess keys from learning anything, and
// from reaching the store faster than a bound.
//
// Throttle counts failed validations per client address (an IPv4 address,
// or an IPv6 /64) with GCRA (internal/ratelimit.Local): by default 20 a
// second in bursts of up to 100. An address over its budget is answered at
// once, before any lookup — 429 with Retry-After — so a flood of made-up
// keys from A addresses reaches the store at most A·(rate·t + burst) times
// in t. Valid keys never use the budget, but share the answer of their
// address once it is spent.
//
// Floor holds every refusal of the key itself (unknown, disabled, deleted or
// expired, or used from an address outside its allow-list) until a fixed
// time after the request arrived, so the paths behind them cannot be told
// apart by timing: without it an unknown key costs a store read that a
// cached disabled key does not (on SQLite about 270 µs of a 590 µs REST
// call), and on Postgres without an in-process tier an existing row costs
// more to read than a missing one. Valid keys are never held.
//
// docs/abuse.md describes both, with measurements.
package abuse
