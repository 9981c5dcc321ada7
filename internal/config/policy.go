package config

import (
	"flag"
	"fmt"

	"github.com/keyward/keyward/internal/ratelimit"
)

// policySettings configure how key policies are enforced.
type policySettings struct {
	// TrustedProxyHops is how many proxies in front of Keyward append to
	// X-Forwarded-For; the client address Check and forward-auth compare
	// with IP allow-lists is then that many entries from its right.
	TrustedProxyHops int
	// RateLimitOnRedisError is what rate limits do while Redis cannot be
	// reached: "local" (each instance enforces the limit on its own), "open"
	// (no limit; the key itself is still verified) or "closed" (refuse).
	RateLimitOnRedisError string
}

func (c *Config) policyFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.TrustedProxyHops, "trusted-proxy-hops", 0, "proxies in front of Keyward that append to X-Forwarded-For; 0 uses the peer address for IP allow-lists (KEYWARD_TRUSTED_PROXY_HOPS)")
	fs.StringVar(&c.RateLimitOnRedisError, "rate-limit-on-redis-error", "local", "rate limits while Redis is unreachable: local (each instance on its own), open (no limit) or closed (refuse) (KEYWARD_RATE_LIMIT_ON_REDIS_ERROR)")
}

func (c *Config) validatePolicy() []error {
	var errs []error
	if c.TrustedProxyHops < 0 || c.TrustedProxyHops > 16 {
		errs = append(errs, fmt.Errorf("--trusted-proxy-hops %d: want 0 to 16", c.TrustedProxyHops))
	}
	if _, err := ratelimit.ParseOnError(c.RateLimitOnRedisError); err != nil {
		errs = append(errs, fmt.Errorf("--rate-limit-on-redis-error: %w", err))
	}
	return errs
}
