package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// OpenReplica connects to a read replica of a database that Open migrates
// (internal/store/replica decides which reads go there). It applies no
// migrations: a replica refuses writes, and the primary's schema reaches it
// by replication. Its sessions are read-only (default_transaction_read_only),
// so a write routed to it by mistake fails instead of landing in another
// database. It connects lazily: an unreachable replica is an error of the
// first read, wrapping keys.ErrUnavailable.
func OpenReplica(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx redacts the password from parse errors.
		return nil, fmt.Errorf("open postgres replica: %w", err)
	}
	cfg.ConnConfig.RuntimeParams["default_transaction_read_only"] = "on"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres replica: %w", err)
	}
	return &Store{pool: pool, now: time.Now}, nil
}
