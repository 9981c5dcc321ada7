package app

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/keyward/keyward/internal/config"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/store/postgres"
	"github.com/keyward/keyward/internal/store/replica"
	"github.com/keyward/keyward/internal/telemetry"
)

// withReplica sends primary's stale-tolerant reads (key lists and searches,
// usage, the audit trail) to --postgres-replica-dsn, if set; validation and
// writes stay on primary (internal/store/replica, docs/replica.md). Only
// `keyward serve` uses a replica: the other commands open the primary alone.
func withReplica(ctx context.Context, cfg *config.Config, primary store.Store, obs *observability, log *slog.Logger) (store.Store, error) {
	if cfg.PostgresReplicaDSN == "" {
		return primary, nil
	}
	rep, err := postgres.OpenReplica(ctx, cfg.PostgresReplicaDSN)
	if err != nil {
		return nil, fmt.Errorf("open postgres replica: %w", err)
	}
	log.InfoContext(ctx, "postgres replica in use for key lists, usage and the audit trail; validation and writes use the primary")
	// Timed and traced like the primary; its pool's statistics are not exported.
	return replica.New(primary, telemetry.Store(rep, obs.metrics, obs.tracing, "postgresql"), log), nil
}
