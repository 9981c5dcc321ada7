package e2e

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/testenv"
)

// TestRevocationAcrossInstances checks the revocation contract with every
// cache on: three keyward processes over one Postgres database and one
// Redis, each holding keys in its in-process tier. It is a history-based
// checker (checkRevocations, history.judge): thousands of DisableKey,
// DeleteKey and RegenerateKey calls through random instances, interleaved
// with Validate and Envoy Check calls from several clients on every
// instance; every call and write is recorded with its start and end, and a
// call that started after a revocation returned and accepted the old secret
// is a violation. Zero violations. Sizes: -short 150 revocations, make test
// 1000, full (KEYWARD_FULL=1 or -full; make reliability) 10,000.
func TestRevocationAcrossInstances(t *testing.T) {
	dsn := testenv.Postgres(t)
	r := startRedis(t)
	c := startCluster(t, 3, dsn, r)
	t.Run("in-process tier is in use", func(t *testing.T) { checkLocalTierServes(t, c, dsn) })
	if t.Failed() {
		t.FailNow()
	}
	checkRevocations(t, c, revocationSizeFor(testing.Short()), "Redis "+r.Addr)
}

// TestRevocationAcrossInstancesOnRedisCluster is the same with the three
// instances on a three-node Redis Cluster (--redis-addr lists the nodes):
// cache entries, scripts, the sharded invalidation channel and the
// acknowledgements go through go-redis's cluster client. A tenth of the
// revocations: the protocol is the same, the cluster client's routing is
// what is new.
func TestRevocationAcrossInstancesOnRedisCluster(t *testing.T) {
	dsn := testenv.Postgres(t)
	rc := testenv.StartRedisCluster(t)
	c := startClusterOnRedisCluster(t, 3, dsn, rc)
	t.Run("in-process tier is in use", func(t *testing.T) { checkLocalTierServes(t, c, dsn) })
	if t.Failed() {
		t.FailNow()
	}
	size := revocationSizeFor(testing.Short())
	size.revocations /= 10
	checkRevocations(t, c, size, "Redis Cluster "+strings.Join(rc.Addrs, ","))
}

// checkLocalTierServes makes sure the test exercises the in-process tier:
// it warms a key on every instance, then disables it in the database behind
// keyward's back and empties Redis. An instance that still accepts the key
// answered from its in-process copy. (The copy is stale on purpose; the key
// is then disabled and enabled through the API, which corrects every tier.)
func checkLocalTierServes(t *testing.T, c *cluster, dsn string) {
	var lastMiss []string
	for attempt := range 3 {
		id, secret := c.createKey(t, c.insts[attempt%3], "tier-probe-"+randomName(t))
		for _, in := range c.insts {
			for range 2 {
				if resp, err := in.validate(secret); err != nil || !resp.GetValid() {
					t.Fatalf("warming the probe key on %s: %v %v", in.name, resp, err)
				}
			}
		}
		rawDB(t, dsn, func(ctx context.Context, conn *pgx.Conn) {
			if _, err := conn.Exec(ctx, "UPDATE api_keys SET state = 2 WHERE id = $1", id); err != nil {
				t.Fatalf("disable the probe key in the database: %v", err)
			}
		})
		c.flushRedis(t)
		lastMiss = nil
		for _, a := range c.validateAll(secret) {
			if a.err != nil || !a.resp.GetValid() {
				lastMiss = append(lastMiss, a.String())
			}
		}
		rawDB(t, dsn, func(ctx context.Context, conn *pgx.Conn) {
			if _, err := conn.Exec(ctx, "UPDATE api_keys SET state = 1 WHERE id = $1", id); err != nil {
				t.Fatalf("re-enable the probe key in the database: %v", err)
			}
		})
		for _, call := range []func(context.Context, keywardv1.KeyServiceClient) error{disable(id), enable(id)} {
			if _, err := c.mgmt(c.insts[0], call); err != nil {
				t.Fatalf("resetting the probe key: %v", err)
			}
		}
		for _, a := range c.validateAll(secret) {
			if a.err != nil || !a.resp.GetValid() {
				t.Fatalf("after resetting the probe key through the API: %v", a)
			}
		}
		if lastMiss == nil {
			t.Logf("every instance answered a warm key from its in-process tier (attempt %d)", attempt+1)
			return
		}
	}
	t.Fatalf("a warm key was not served from the in-process tier (its row was disabled and Redis emptied, and these "+
		"answered from the store): %v. The revocation test would not exercise the in-process tier.", lastMiss)
}
