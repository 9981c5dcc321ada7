package config

import (
	"errors"
	"flag"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

// replicaSettings configure a Postgres read replica (docs/replica.md).
type replicaSettings struct {
	// PostgresReplicaDSN is a read replica of --postgres-dsn's database, or
	// "" for none. Only reads that may be stale go there: listing and
	// searching keys, usage and the audit trail. Validation, every write and
	// every read a write depends on stay on the primary, so a replica's lag
	// can show an admin an old list but never make a revoked key valid.
	PostgresReplicaDSN string `json:"-"`
}

func (c *Config) replicaFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.PostgresReplicaDSN, "postgres-replica-dsn", "", "Postgres read replica of --postgres-dsn for key lists and searches, usage and the audit trail, which may then lag the primary; validation and writes always use the primary; empty: none (KEYWARD_POSTGRES_REPLICA_DSN)")
}

func (c *Config) validateReplica() []error {
	if c.PostgresReplicaDSN == "" {
		return nil
	}
	var errs []error
	if c.PostgresDSN == "" {
		errs = append(errs, errors.New("--postgres-replica-dsn: needs --postgres-dsn, the primary it replicates"))
	}
	if _, err := pgconn.ParseConfig(c.PostgresReplicaDSN); err != nil {
		errs = append(errs, fmt.Errorf("--postgres-replica-dsn: %s", pgError(err)))
	}
	return errs
}
