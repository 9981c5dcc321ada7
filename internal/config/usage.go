package config

import (
	"flag"
	"fmt"
	"time"
)

// usageSettings configure how key usage is recorded (internal/usage).
type usageSettings struct {
	// UsageFlushInterval is how often the counted verifications are written
	// to the store: at most one write per key per interval, and what a
	// killed process loses.
	UsageFlushInterval time.Duration
}

func (c *Config) usageFlags(fs *flag.FlagSet) {
	fs.DurationVar(&c.UsageFlushInterval, "usage-flush-interval", 10*time.Second, "how often key usage (last use, verifications by hour and outcome) is written to the store; a killed process loses at most this much (KEYWARD_USAGE_FLUSH_INTERVAL)")
}

func (c *Config) validateUsage() []error {
	if c.UsageFlushInterval < 100*time.Millisecond || c.UsageFlushInterval > time.Hour {
		return []error{fmt.Errorf("--usage-flush-interval %v: want 100ms to 1h", c.UsageFlushInterval)}
	}
	return nil
}
