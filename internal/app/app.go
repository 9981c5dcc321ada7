// Package app wires Keyward together: constructors in order, one place.
package app

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward/internal/adminauth"
	"github.com/keyward/keyward/internal/cache"
	"github.com/keyward/keyward/internal/config"
	"github.com/keyward/keyward/internal/console"
	"github.com/keyward/keyward/internal/extauthz"
	"github.com/keyward/keyward/internal/keyservice"
	"github.com/keyward/keyward/internal/server"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/store/postgres"
	"github.com/keyward/keyward/internal/store/sqlite"
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
	redis  redis.UniversalClient // nil without --redis-addr
}

// New opens the store, bootstraps the admin key and binds the listeners.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger) (_ *App, err error) {
	log.InfoContext(ctx, "starting keyward", "config", cfg)
	st, err := OpenStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			st.Close()
		}
	}()
	if err := adminauth.Bootstrap(ctx, st, adminauth.BootstrapOptions{
		EnvKey: cfg.AdminKey, File: cfg.AdminKeyFile(), Logger: log,
	}); err != nil {
		return nil, fmt.Errorf("bootstrap admin key: %w", err)
	}

	ready := map[string]server.Checker{"store": st}
	var rdb redis.UniversalClient
	if cfg.RedisAddr != "" {
		rdb = redis.NewUniversalClient(&redis.UniversalOptions{
			Addrs: strings.Split(cfg.RedisAddr, ","),
			// Validate falls back to the store when Redis is slow or gone;
			// short timeouts keep that fallback fast.
			DialTimeout:  250 * time.Millisecond,
			ReadTimeout:  250 * time.Millisecond,
			WriteTimeout: 250 * time.Millisecond,
			PoolTimeout:  250 * time.Millisecond,
			// Retries with backoff would turn one refused connection into
			// seconds of stalled lookups; the cache skips Redis instead.
			MaxRetries:    -1,
			DialerRetries: 1,
		})
		ready["redis"] = redisPing{rdb}
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
		Logger:       log,
	})
	verifier := validate.New(caches, nil)
	svc := keyservice.New(keyservice.Options{
		Store:        st,
		Verifier:     verifier,
		Caches:       caches,
		Environments: cfg.Environments,
		Logger:       log,
	})
	authz, err := extauthz.New(extauthz.Options{
		Verifier:        verifier,
		Headers:         cfg.AuthHeaders,
		QueryParam:      cfg.AuthQueryParam,
		StripCredential: cfg.AuthStripCredential,
		Metadata:        cfg.AuthForwardMetadata,
		Strict:          cfg.AuthStrict,
		Logger:          log,
	})
	if err != nil {
		if rdb != nil {
			rdb.Close()
		}
		return nil, err
	}
	srv, err := server.New(server.Options{
		GRPCAddr: cfg.GRPCAddr,
		HTTPAddr: cfg.HTTPAddr,
		Service:  svc,
		Auth:     adminauth.New(caches, nil),
		Ready:    ready,
		Logger:   log,
		Register: authz.Register, // Envoy's ext_authz on the gRPC listener
		Routes: func(mux *http.ServeMux) {
			authz.Routes(mux)
			mux.Handle("/", console.New()) // the web console; "/" only gets what no other route takes
		},
	})
	if err != nil {
		if rdb != nil {
			rdb.Close()
		}
		return nil, err
	}
	return &App{cfg: cfg, log: log, store: st, srv: srv, caches: caches, redis: rdb}, nil
}

type redisPing struct{ c redis.UniversalClient }

func (r redisPing) Ping(ctx context.Context) error { return r.c.Ping(ctx).Err() }

// GRPCAddr and HTTPAddr are the bound listener addresses.
func (a *App) GRPCAddr() string { return a.srv.GRPCAddr() }
func (a *App) HTTPAddr() string { return a.srv.HTTPAddr() }

// Run serves until ctx ends, then stops gracefully and closes the store.
func (a *App) Run(ctx context.Context) error {
	defer a.store.Close()
	if a.redis != nil {
		defer a.redis.Close()
	}
	cctx, stopCache := context.WithCancel(ctx)
	cacheDone := make(chan struct{})
	go func() { a.caches.Run(cctx); close(cacheDone) }()
	defer func() { stopCache(); <-cacheDone }()
	admin := a.cfg.AdminKeyFile()
	if a.cfg.AdminKey != "" {
		admin = "(from KEYWARD_ADMIN_KEY)"
	}
	a.log.InfoContext(ctx, "keyward is serving",
		"console", "http://"+a.HTTPAddr()+"/",
		"rest", "http://"+a.HTTPAddr()+"/v1/keys",
		"grpc", a.GRPCAddr(),
		"openapi", "http://"+a.HTTPAddr()+"/openapi.json",
		"admin_key", admin)
	err := a.srv.Run(ctx)
	a.log.Info("keyward stopped")
	return err
}
