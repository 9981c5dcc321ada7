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

// Serve runs the server until ctx ends.
func Serve(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	log.InfoContext(ctx, "starting keyward", "config", cfg)
	st, err := OpenStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()

	if err := adminauth.Bootstrap(ctx, st, adminauth.BootstrapOptions{
		EnvKey: cfg.AdminKey, File: cfg.AdminKeyFile(), Logger: log,
	}); err != nil {
		return fmt.Errorf("bootstrap admin key: %w", err)
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
		return err
	}
	admin := cfg.AdminKeyFile()
	if cfg.AdminKey != "" {
		admin = "(from KEYWARD_ADMIN_KEY)"
	}
	log.InfoContext(ctx, "keyward is serving",
		"rest", "http://"+srv.HTTPAddr()+"/v1/keys",
		"grpc", srv.GRPCAddr(),
		"openapi", "http://"+srv.HTTPAddr()+"/openapi.json",
		"admin_key", admin)
	err = srv.Run(ctx)
	log.Info("keyward stopped")
	return err
}
