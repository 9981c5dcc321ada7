// Package app wires Keyward together: constructors in order, one place.
package app

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/keyward/keyward/internal/adminauth"
	"github.com/keyward/keyward/internal/config"
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
	cfg   *config.Config
	log   *slog.Logger
	store store.Store
	srv   *server.Server
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

	lookup := validate.LookupFunc(st.GetByHash)
	svc := keyservice.New(keyservice.Options{
		Store:        st,
		Verifier:     validate.New(lookup, nil),
		Environments: cfg.Environments,
		Logger:       log,
	})
	srv, err := server.New(server.Options{
		GRPCAddr: cfg.GRPCAddr,
		HTTPAddr: cfg.HTTPAddr,
		Service:  svc,
		Auth:     adminauth.New(lookup, nil),
		Ready:    map[string]server.Checker{"store": st},
		Logger:   log,
	})
	if err != nil {
		return nil, err
	}
	return &App{cfg: cfg, log: log, store: st, srv: srv}, nil
}

// GRPCAddr and HTTPAddr are the bound listener addresses.
func (a *App) GRPCAddr() string { return a.srv.GRPCAddr() }
func (a *App) HTTPAddr() string { return a.srv.HTTPAddr() }

// Run serves until ctx ends, then stops gracefully and closes the store.
func (a *App) Run(ctx context.Context) error {
	defer a.store.Close()
	admin := a.cfg.AdminKeyFile()
	if a.cfg.AdminKey != "" {
		admin = "(from KEYWARD_ADMIN_KEY)"
	}
	a.log.InfoContext(ctx, "keyward is serving",
		"rest", "http://"+a.HTTPAddr()+"/v1/keys",
		"grpc", a.GRPCAddr(),
		"openapi", "http://"+a.HTTPAddr()+"/openapi.json",
		"admin_key", admin)
	err := a.srv.Run(ctx)
	a.log.Info("keyward stopped")
	return err
}
