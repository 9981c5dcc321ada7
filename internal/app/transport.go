package app

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward/internal/certwatch"
	"github.com/keyward/keyward/internal/config"
	"github.com/keyward/keyward/internal/server"
)

// newRedis builds the Redis client: addresses, credentials and TLS from the
// configuration (a single node, a cluster, or Sentinels), timeouts from here.
func newRedis(cfg *config.Config) (redis.UniversalClient, error) {
	o, err := cfg.RedisOptions()
	if err != nil {
		return nil, err
	}
	// Validate falls back to the store when Redis is slow or gone; short
	// timeouts keep that fallback fast.
	o.DialTimeout = 250 * time.Millisecond
	o.ReadTimeout = 250 * time.Millisecond
	o.WriteTimeout = 250 * time.Millisecond
	o.PoolTimeout = 250 * time.Millisecond
	// Retries with backoff would turn one refused connection into seconds of
	// stalled lookups; the cache skips Redis instead.
	o.MaxRetries = -1
	o.DialerRetries = 1
	return redis.NewUniversalClient(o), nil
}

// serverTLS sets the listeners' TLS options: certificates from files,
// reloaded when they change, and the gRPC listener's client-certificate
// policy. Without --tls-cert-file it changes nothing.
func serverTLS(cfg *config.Config, log *slog.Logger, o *server.Options) error {
	if !cfg.TLS() {
		return nil
	}
	w, err := certwatch.New(certwatch.Options{
		CertFile:     cfg.TLSCertFile,
		KeyFile:      cfg.TLSKeyFile,
		ClientCAFile: cfg.GRPCClientCAFile,
		Logger:       log,
	})
	if err != nil {
		return fmt.Errorf("TLS: %w", err)
	}
	o.TLS = w
	o.ClientCerts = cfg.GRPCClientCAFile != ""
	o.ClientSubjects = cfg.GRPCClientSubjects
	return nil
}

// httpScheme is the HTTP listener's URL scheme, for the start-up log.
func httpScheme(cfg *config.Config) string {
	if cfg.TLS() {
		return "https://"
	}
	return "http://"
}
