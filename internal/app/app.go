// Package app wires Keyward together: constructors in order, one place.
package app

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward/internal/adminauth"
	"github.com/keyward/keyward/internal/cache"
	"github.com/keyward/keyward/internal/config"
	"github.com/keyward/keyward/internal/console"
	"github.com/keyward/keyward/internal/extauthz"
	"github.com/keyward/keyward/internal/keyservice"
	"github.com/keyward/keyward/internal/ratelimit"
	"github.com/keyward/keyward/internal/server"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/store/postgres"
	"github.com/keyward/keyward/internal/store/sqlite"
	"github.com/keyward/keyward/internal/usage"
	"github.com/keyward/keyward/internal/validate"
)

// OpenStore opens (and migrates) the configured store.
func OpenStore(ctx context.Context, cfg *config.Config) (store.Store, error) {
	if cfg.PostgresDSN != "" {
		st, err := postgres.Open(ctx, cfg.PostgresDSN)
		if err != nil {
			return nil, fmt.Errorf("open postgres: %w", err)
		}
		return st, nil
	}
	st, err := sqlite.Open(ctx, cfg.SQLitePath())
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", cfg.SQLitePath(), err)
	}
	return st, nil
}

// App is a wired Keyward instance with its listeners bound.
type App struct {
	cfg    *config.Config
	log    *slog.Logger
	store  store.Store
	srv    *server.Server
	caches *cache.Cache
	usage  *usage.Recorder
	redis  redis.UniversalClient // nil without --redis-addr
	obs    *observability
}

// New opens the store, bootstraps the admin key and binds the listeners.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger) (_ *App, err error) {
	log = server.LogRequestIDs(log) // request_id on each line logged for a request
	log.InfoContext(ctx, "starting keyward", "config", cfg)
	sealer, err := cfg.Sealer() // nil without a master key: recoverable keys are refused
	if err != nil {
		return nil, err
	}
	st, err := OpenStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			st.Close()
		}
	}()
	obs, err := newObservability(ctx, log) // metrics and tracing (observe.go)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			obs.shutdown()
		}
	}()
	st = obs.store(st)
	routed, err := withReplica(ctx, cfg, st, obs, log)
	if err != nil {
		return nil, err
	}
	st = routed
	if err := adminauth.Bootstrap(ctx, st, adminauth.BootstrapOptions{
		EnvKey: cfg.AdminKey, File: cfg.AdminKeyFile(), Logger: log,
	}); err != nil {
		return nil, fmt.Errorf("bootstrap admin key: %w", err)
	}

	ready := map[string]server.Checker{"store": st}
	var rdb redis.UniversalClient
	if cfg.RedisAddr != "" {
		if rdb, err = newRedis(cfg); err != nil {
			return nil, err
		}
		ready["redis"] = redisPing{rdb}
		obs.redis(rdb)
	}
	local := cfg.LocalCache
	if local && rdb == nil && cfg.PostgresDSN != "" {
		// Several instances may share this Postgres, and without Redis they
		// could not tell each other about revocations.
		log.WarnContext(ctx, "in-process cache off: with Postgres it needs --redis-addr to stay coherent across instances")
		local = false
	}
	caches := cache.New(cache.Options{
		Store:        st.GetByHash,
		Redis:        rdb,
		Namespace:    cfg.RedisNamespace,
		Local:        local,
		LocalEntries: cfg.LocalCacheEntries,
		NegativeTTL:  cfg.NegativeCacheTTL,
		Observer:     obs.metrics,
		Logger:       log,
	})
	obs.cache(caches, rdb != nil)
	// Rate limits are held in Redis when there is one, so they hold across
	// instances; otherwise in process (exact for one embedded instance, per
	// instance when several share a Postgres).
	localLimits := ratelimit.NewLocal(cfg.LocalCacheEntries)
	var limiter validate.RateLimiter = localLimits
	if rdb != nil {
		mode, _ := ratelimit.ParseOnError(cfg.RateLimitOnRedisError) // checked by config
		limiter = ratelimit.NewFallback(ratelimit.NewRedis(rdb, cfg.RedisNamespace), mode, localLimits, log)
	}
	// Usage is counted in memory and written in batches (docs/usage.md).
	recorder := usage.New(usage.Options{Store: st, Interval: cfg.UsageFlushInterval, Logger: log})
	obs.usage(recorder)
	// Guessed keys: failed validations throttled per client address, and
	// refusals of the key itself answered at a fixed time (docs/abuse.md).
	throttle, floor, err := newAbuse(cfg, log)
	if err != nil {
		if rdb != nil {
			rdb.Close()
		}
		return nil, err
	}
	obs.abuse(throttle, floor)
	verifier := validate.NewWith(validate.Options{Lookup: caches, Limiter: limiter, Quotas: st, Usage: recorder, Pacer: pacer(floor)})
	obs.verifier(verifier)
	svc := keyservice.New(keyservice.Options{
		Store:        st,
		Verifier:     verifier,
		Caches:       caches,
		Environments: cfg.Environments,
		Logger:       log,
		Sealer:       sealer,
		// Reveals are limited across instances too when rate limits are.
		RevealLimiter: limiter,
	})
	authz, err := extauthz.New(extauthz.Options{
		Verifier:         verifier,
		Headers:          cfg.AuthHeaders,
		QueryParam:       cfg.AuthQueryParam,
		StripCredential:  cfg.AuthStripCredential,
		Metadata:         cfg.AuthForwardMetadata,
		Strict:           cfg.AuthStrict,
		TrustedProxyHops: cfg.TrustedProxyHops,
		Throttle:         throttle,
		Logger:           log,
	})
	if err != nil {
		if rdb != nil {
			rdb.Close()
		}
		return nil, err
	}
	srvOpts := server.Options{
		GRPCAddr: cfg.GRPCAddr,
		HTTPAddr: cfg.HTTPAddr,
		Service:  svc,
		Auth:     adminauth.New(caches, nil),
		AuditLog: st, // failed admin sign-ins
		Ready:    ready,
		Logger:   log,
		Register: authz.Register, // Envoy's ext_authz on the gRPC listener
		Routes: func(mux *http.ServeMux) {
			authz.Routes(mux)
			mux.Handle("/", console.New()) // the web console; "/" only gets what no other route takes
		},

		// Failed Validate calls over REST (and gRPC if configured), by client address.
		Abuse:            throttle,
		TrustedProxyHops: cfg.TrustedProxyHops,
	}
	if err := serverTLS(cfg, log, &srvOpts); err != nil {
		if rdb != nil {
			rdb.Close()
		}
		return nil, err
	}
	obs.server(&srvOpts)
	srv, err := server.New(srvOpts)
	if err != nil {
		if rdb != nil {
			rdb.Close()
		}
		return nil, err
	}
	return &App{cfg: cfg, log: log, store: st, srv: srv, caches: caches, usage: recorder, redis: rdb, obs: obs}, nil
}

type redisPing struct{ c redis.UniversalClient }

func (r redisPing) Ping(ctx context.Context) error { return r.c.Ping(ctx).Err() }

// GRPCAddr and HTTPAddr are the bound listener addresses.
func (a *App) GRPCAddr() string { return a.srv.GRPCAddr() }
func (a *App) HTTPAddr() string { return a.srv.HTTPAddr() }

// Run serves until ctx ends, then stops gracefully and closes the store.
func (a *App) Run(ctx context.Context) error {
	defer a.store.Close()
	defer a.obs.shutdown()
	if a.redis != nil {
		defer a.redis.Close()
	}
	cctx, stopCache := context.WithCancel(ctx)
	cacheDone := make(chan struct{})
	go func() { a.caches.Run(cctx); close(cacheDone) }()
	defer func() { stopCache(); <-cacheDone }()
	// Not stopped by ctx: the last flush must follow the last verification,
	// so it runs once a.srv.Run has returned, and before the store closes.
	uctx, stopUsage := context.WithCancel(context.WithoutCancel(ctx))
	usageDone := make(chan struct{})
	go func() { a.usage.Run(uctx); close(usageDone) }()
	defer func() { stopUsage(); <-usageDone }()
	admin := a.cfg.AdminKeyFile()
	if a.cfg.AdminKey != "" {
		admin = "(from KEYWARD_ADMIN_KEY)"
	}
	web := httpScheme(a.cfg) + a.HTTPAddr()
	a.log.InfoContext(ctx, "keyward is serving",
		"console", web+"/",
		"rest", web+"/v1/keys",
		"grpc", a.GRPCAddr(),
		"openapi", web+"/openapi.json",
		"admin_key", admin)
	err := a.srv.Run(ctx)
	a.log.Info("keyward stopped")
	return err
}
