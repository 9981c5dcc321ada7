package ratelimit

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward/internal/keys"
)

// gcraScript is params.step in Lua, with Redis's clock. KEYS[1] holds the
// TAT in Unix µs; ARGV[1] is T in µs, ARGV[2] the burst. It returns
// {allowed, remaining, retry after µs, reset after µs}. The key lives until
// its TAT passes: after that it would mean the same as no key.
//
// Numbers are Lua doubles, exact below 2^53 (see maxSpan); the TAT is
// written with %d so that it never turns into exponent notation.
var gcraScript = redis.NewScript(`
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local cut = false
if tat > now + burst * interval then
  tat = now + burst * interval
  cut = true
end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if now < allow_at then
  if cut then
    redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', string.format('%d', math.ceil((tat - now) / 1000)))
  end
  return {0, 0, allow_at - now, tat - now}
end
local ttl = new_tat - now
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', string.format('%d', math.ceil(ttl / 1000)))
return {1, math.floor((now - allow_at) / interval), 0, ttl}`)

// Redis enforces limits in Redis, shared by every instance using the same
// Redis and namespace. Each Allow is one EVALSHA (EVAL once after a script
// flush) on the key "<namespace>:rl:{<key id>}": the hash tag is the key id,
// so in a Redis Cluster the limits spread over all shards.
type Redis struct {
	c      redis.UniversalClient
	prefix string
}

// NewRedis returns a limiter on c. namespace separates deployments sharing
// one Redis, as for the cache; "" means "kw".
func NewRedis(c redis.UniversalClient, namespace string) *Redis {
	if namespace == "" {
		namespace = "kw"
	}
	return &Redis{c: c, prefix: namespace + ":rl:{"}
}

func (r *Redis) key(keyID string) string { return r.prefix + keyID + "}" }

// Allow implements Limiter. An error other than ErrInvalidLimit means Redis
// did not answer; it wraps keys.ErrUnavailable.
func (r *Redis) Allow(ctx context.Context, keyID string, rl keys.RateLimit) (Decision, error) {
	p, err := paramsOf(rl)
	if err != nil {
		return Decision{}, err
	}
	res, err := gcraScript.Run(ctx, r.c, []string{r.key(keyID)}, p.interval, p.burst).Int64Slice()
	if err != nil {
		return Decision{}, unavailableError{err}
	}
	if len(res) != 4 {
		return Decision{}, unavailableError{fmt.Errorf("script answered %d values, want 4", len(res))}
	}
	return p.decision(res[0] == 1, res[1], res[2], res[3]), nil
}

// unavailableError is a Redis failure; it is a keys.ErrUnavailable, so a
// caller without a Fallback answers Unavailable.
type unavailableError struct{ err error }

func (e unavailableError) Error() string   { return "rate limiter: redis unavailable: " + e.err.Error() }
func (e unavailableError) Unwrap() []error { return []error{keys.ErrUnavailable, e.err} }
