package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/testenv"
)

// TestReplicaLagNeverRevivesAKey: with --postgres-replica-dsn, a replica
// that lags the primary shows an admin an old key list, but never makes a
// revoked key valid, on any tier.
//
// There is no streaming replication here. The replica is a second database
// holding a copy of the primary's tables taken before the revocations, and
// never updated again: a replica lagging forever, the worst case. Keys are
// then disabled, regenerated and deleted on the primary, and every Validate
// must refuse their old secrets: on the warm instance that made the
// changes, on a cold instance started afterwards with Redis emptied (its
// lookups go to the store: if that were the replica, the old rows would be
// valid and would be cached), and on one without Redis, which reads the
// store on every call. Meanwhile ListKeys, which does read the replica,
// still shows the revoked keys active: the documented staleness, and the
// proof that the replica is in use. When the replica becomes unreachable,
// lists are read from the primary.
func TestReplicaLagNeverRevivesAKey(t *testing.T) {
	dsn := testenv.Postgres(t)
	replicaDB := testenv.Postgres(t)
	migrate(t, replicaDB)
	// The instances reach the replica through a proxy, to cut it at the end.
	proxy := testenv.NewProxy(t, dsnHostPort(t, replicaDB))
	replicaArgs := []string{"--postgres-replica-dsn", dsnVia(t, replicaDB, proxy.Addr())}
	r := startRedis(t)
	c := startCluster(t, 1, dsn, r, replicaArgs...)
	warm := c.insts[0]
	if !warm.WaitMsg("postgres replica in use for key lists, usage and the audit trail; validation and writes use the primary", 1, 0) {
		t.Fatal("keyward did not log that it uses the replica")
	}
	snapshot(t, dsn, replicaDB) // caught up: the admin key is there too

	type revoked struct {
		id, secret, op string
		want           keywardv1.ValidateResponse_Reason
	}
	prefix := "replica-" + randomName(t)
	var keys []revoked
	for i := range 12 {
		id, secret := c.createKey(t, warm, fmt.Sprintf("%s-%02d", prefix, i))
		op, want := "DisableKey", keywardv1.ValidateResponse_REASON_DISABLED
		switch i % 3 {
		case 1:
			op, want = "RegenerateKey", keywardv1.ValidateResponse_REASON_NOT_FOUND
		case 2:
			op, want = "DeleteKey", keywardv1.ValidateResponse_REASON_NOT_FOUND
		}
		keys = append(keys, revoked{id, secret, op, want})
		for range 2 { // warm: in process and in Redis
			if resp, err := warm.validate(secret); err != nil || !resp.GetValid() {
				t.Fatalf("warming %s: %v %v", id, resp, err)
			}
		}
	}
	snapshot(t, dsn, replicaDB) // the replica stops here
	if n := c.countNamed(t, warm, prefix+"-00"); n != 1 {
		t.Fatalf("ListKeys through the replica finds %d keys named %s-00 before any change, want 1", n, prefix)
	}

	for _, k := range keys {
		var call func(context.Context, keywardv1.KeyServiceClient) error
		switch k.op {
		case "DisableKey":
			call = disable(k.id)
		case "RegenerateKey":
			var ignored string
			call = regenerate(k.id, &ignored)
		case "DeleteKey":
			call = deleteKey(k.id)
		}
		if _, err := c.mgmt(warm, call); err != nil {
			t.Fatalf("%s %s: %v", k.op, k.id, err)
		}
	}
	// A key created after the snapshot: the replica has never seen it.
	newID, newSecret := c.createKey(t, warm, prefix+"-new")

	check := func(in *instance, when string) {
		t.Helper()
		for _, k := range keys {
			for i := range 2 { // the first may read the store, the second a cache it filled
				resp, err := in.validate(k.secret)
				switch {
				case err != nil:
					t.Errorf("%s, %s: Validate of the secret %s revoked by %s (call %d): %v", in.name, when, k.id, k.op, i+1, err)
				case resp.GetValid() || resp.GetReason() != k.want:
					t.Errorf("%s, %s: Validate of the secret %s revoked by %s (call %d) = valid %v, %v; want %v",
						in.name, when, k.id, k.op, i+1, resp.GetValid(), resp.GetReason(), k.want)
				}
			}
		}
		if resp, err := in.validate(newSecret); err != nil || !resp.GetValid() {
			t.Errorf("%s, %s: the key created after the snapshot: %v %v, want valid", in.name, when, resp, err)
		}
	}
	check(warm, "warm, right after the revocations")

	// The replica is stale, and ListKeys shows it: every revoked key is
	// still listed active (deleted ones too), the new key is missing.
	// GetKey reads the primary.
	listed := map[string]*keywardv1.Key{}
	ctx, cancel := rpcCtx()
	resp, err := warm.kc.ListKeys(c.admin(ctx), &keywardv1.ListKeysRequest{Query: prefix, PageSize: 100})
	cancel()
	if err != nil {
		t.Fatalf("ListKeys: %v", err)
	}
	for _, k := range resp.GetKeys() {
		listed[k.GetKeyId()] = k
	}
	for _, k := range keys {
		if l := listed[k.id]; l == nil || l.GetState() != keywardv1.Key_STATE_ACTIVE {
			t.Errorf("ListKeys through the lagging replica: %s (revoked by %s) = %v, want listed active: is the replica in use?", k.id, k.op, l)
		}
	}
	if listed[newID] != nil {
		t.Errorf("ListKeys through the lagging replica lists %s, created after the snapshot", newID)
	}
	if got := c.getKey(t, warm, keys[0].id).GetState(); got != keywardv1.Key_STATE_DISABLED {
		t.Errorf("GetKey %s = %v, want STATE_DISABLED: GetKey must read the primary", keys[0].id, got)
	}

	// Empty Redis and start a cold instance: nothing cached anywhere it
	// looks, so its lookups go to the store.
	c.flushRedis(t)
	cold := c.addInstance(t, "keyward-cold", dsn, append([]string{"--redis-addr", r.Addr}, replicaArgs...)...)
	if !cold.WaitMsg(msgConfirmed, 1, 10*time.Second) {
		t.Fatalf("%s did not confirm its invalidation stream", cold.name)
	}
	check(cold, "cold start, Redis emptied")
	check(warm, "warm, Redis emptied")
	// Without Redis, the in-process tier is off (Postgres): every Validate
	// reads the store.
	bare := c.addInstance(t, "keyward-no-redis", dsn, replicaArgs...)
	check(bare, "no cache")

	// The replica goes away: lists come from the primary, now up to date.
	proxy.Cut()
	if n := c.countNamed(t, bare, prefix+"-new"); n != 1 {
		t.Errorf("with the replica unreachable, ListKeys finds %d keys named %s-new, want 1 (read from the primary)", n, prefix)
	}
	check(bare, "replica unreachable")
}

// addInstance starts one more keyward on dsn with c's admin key and args.
func (c *cluster) addInstance(t *testing.T, name, dsn string, args ...string) *instance {
	t.Helper()
	s := startServerWith(t, serverOptions{DataDir: t.TempDir(), DSN: dsn, AdminKey: c.adminKey, Args: slices.Clone(args)})
	conn, err := grpc.NewClient(s.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	in := &instance{server: s, name: name, kc: keywardv1.NewKeyServiceClient(conn)}
	c.insts = append(c.insts, in)
	return in
}

// migrate applies keyward's schema to the database dsn names, as
// `keyward migrate` does.
func migrate(t *testing.T, dsn string) {
	t.Helper()
	cmd := exec.Command(keywardBin, "migrate", "--postgres-dsn", dsn)
	cmd.Dir = t.TempDir()
	cmd.Env = serverEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("keyward migrate: %v\n%s", err, out)
	}
}

// snapshot makes the database to a copy of the database from, as of now:
// every table but schema_migrations (both have the same schema). It is what
// a replica holds when it stops replaying the primary's changes.
func snapshot(t *testing.T, from, to string) {
	t.Helper()
	rawDB(t, from, func(ctx context.Context, src *pgx.Conn) {
		rows, err := src.Query(ctx, `SELECT table_name FROM information_schema.tables
			WHERE table_schema = 'public' AND table_type = 'BASE TABLE' AND table_name <> 'schema_migrations'`)
		if err != nil {
			t.Fatal(err)
		}
		tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		// api_keys first: the other tables' rows refer to it.
		slices.SortFunc(tables, func(a, b string) int {
			switch {
			case a == b:
				return 0
			case a == "api_keys":
				return -1
			case b == "api_keys":
				return 1
			}
			return bytes.Compare([]byte(a), []byte(b))
		})
		if len(tables) == 0 || tables[0] != "api_keys" {
			t.Fatalf("tables to copy: %v, want api_keys among them", tables)
		}
		copies := make([]bytes.Buffer, len(tables))
		for i, table := range tables {
			if _, err := src.PgConn().CopyTo(ctx, &copies[i], "COPY "+pgx.Identifier{table}.Sanitize()+" TO STDOUT"); err != nil {
				t.Fatalf("copy %s out: %v", table, err)
			}
		}
		rawDB(t, to, func(ctx context.Context, dst *pgx.Conn) {
			tx, err := dst.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			quoted := make([]string, len(tables))
			for i, table := range tables {
				quoted[i] = pgx.Identifier{table}.Sanitize()
			}
			if _, err := tx.Exec(ctx, "TRUNCATE "+strings.Join(quoted, ", ")); err != nil {
				t.Fatal(err)
			}
			for i, table := range tables {
				if _, err := tx.Conn().PgConn().CopyFrom(ctx, &copies[i], "COPY "+quoted[i]+" FROM STDIN"); err != nil {
					t.Fatalf("copy %s in: %v", table, err)
				}
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
		})
	})
}

// dsnHostPort is the host:port a DSN connects to.
func dsnHostPort(t *testing.T, dsn string) string {
	t.Helper()
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		t.Fatal("the test DSN does not parse")
	}
	return net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
}
