package telemetry

import (
	"context"
	"errors"
	"math"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// WatchPostgresPool exports the pgx pool's statistics, read at each scrape.
func (m *Metrics) WatchPostgresPool(stat func() *pgxpool.Stat) {
	m.reg.MustRegister(&pgxCollector{stat: stat})
}

// WatchLease exports the invalidation lease's age, read at each scrape from
// age (cache.Cache.LeaseAge). Only for instances with Redis, which have a lease.
func (m *Metrics) WatchLease(age func() (time.Duration, bool)) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "keyward_cache_lease_age_seconds",
		Help: "Time since this instance sent the latest heartbeat that came back through the invalidation stream. " +
			"In-process cache entries are used only while it is under the lease (250ms); " +
			"+Inf while no heartbeat has come back on the current subscription (Redis unreachable or reconnecting).",
	}, func() float64 {
		d, ok := age()
		if !ok {
			return math.Inf(1)
		}
		return d.Seconds()
	}))
}

// WatchRedis counts failed Redis commands (through a hook on rdb) and
// exports rdb's connection pool statistics, read at each scrape.
func (m *Metrics) WatchRedis(rdb redis.UniversalClient) {
	rdb.AddHook(redisErrorHook{m})
	m.reg.MustRegister(&redisPoolCollector{stats: rdb.PoolStats})
}

// redisErrorHook counts failed commands by name. The names come from
// Keyward's own code (get, evalsha, spublish, …), never from input.
type redisErrorHook struct{ m *Metrics }

func (h redisErrorHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil {
			h.m.redisErrors.WithLabelValues("dial").Inc()
		}
		return c, err
	}
}

func (h redisErrorHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if redisFailed(err) && !handshake(cmd) {
			h.m.redisErrors.WithLabelValues(cmd.Name()).Inc()
		}
		return err
	}
}

func (h redisErrorHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, c := range cmds {
			if redisFailed(c.Err()) && !handshake(c) {
				h.m.redisErrors.WithLabelValues(c.Name()).Inc()
			}
		}
		return err
	}
}

// handshake reports a command go-redis sends when it opens a connection
// (HELLO, CLIENT SETINFO, CLIENT MAINT_NOTIFICATIONS); it tolerates their
// refusal by older servers, and so do these metrics. Keyward itself sends
// neither.
func handshake(cmd redis.Cmder) bool {
	n := cmd.Name()
	return n == "hello" || n == "client"
}

// redisFailed: redis.Nil is an answer (no such key), and NOSCRIPT makes
// go-redis send the script itself, which then succeeds or fails on its own.
func redisFailed(err error) bool {
	return err != nil && !errors.Is(err, redis.Nil) && !strings.HasPrefix(err.Error(), "NOSCRIPT")
}

func desc(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, nil) }

var pgxDescs = struct {
	acquired, idle, constructing, total, max                               *prometheus.Desc
	acquires, acquireSeconds, emptyAcquires, emptyWait, canceled, newConns *prometheus.Desc
	lifetimeDestroyed, idleDestroyed                                       *prometheus.Desc
}{
	acquired:          desc("keyward_postgres_pool_acquired_connections", "Connections in use by a query or transaction."),
	idle:              desc("keyward_postgres_pool_idle_connections", "Idle connections in the pool."),
	constructing:      desc("keyward_postgres_pool_constructing_connections", "Connections being opened."),
	total:             desc("keyward_postgres_pool_connections", "Connections in the pool, in any state."),
	max:               desc("keyward_postgres_pool_max_connections", "Largest size the pool may grow to."),
	acquires:          desc("keyward_postgres_pool_acquires_total", "Connections acquired from the pool."),
	acquireSeconds:    desc("keyward_postgres_pool_acquire_seconds_total", "Time spent acquiring connections."),
	emptyAcquires:     desc("keyward_postgres_pool_empty_acquires_total", "Acquires that had to wait because no connection was idle."),
	emptyWait:         desc("keyward_postgres_pool_empty_acquire_wait_seconds_total", "Time spent waiting in acquires that found no idle connection."),
	canceled:          desc("keyward_postgres_pool_canceled_acquires_total", "Acquires given up because their context ended."),
	newConns:          desc("keyward_postgres_pool_new_connections_total", "Connections opened."),
	lifetimeDestroyed: desc("keyward_postgres_pool_max_lifetime_closed_total", "Connections closed for reaching their maximum lifetime."),
	idleDestroyed:     desc("keyward_postgres_pool_max_idle_closed_total", "Connections closed for being idle too long."),
}

// pgxCollector reads pgxpool.Stat at scrape time.
type pgxCollector struct{ stat func() *pgxpool.Stat }

func (c *pgxCollector) Describe(ch chan<- *prometheus.Desc) {
	d := pgxDescs
	for _, x := range []*prometheus.Desc{d.acquired, d.idle, d.constructing, d.total, d.max, d.acquires, d.acquireSeconds,
		d.emptyAcquires, d.emptyWait, d.canceled, d.newConns, d.lifetimeDestroyed, d.idleDestroyed} {
		ch <- x
	}
}

func (c *pgxCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stat()
	d := pgxDescs
	g := func(desc *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v)
	}
	n := func(desc *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, v)
	}
	g(d.acquired, float64(s.AcquiredConns()))
	g(d.idle, float64(s.IdleConns()))
	g(d.constructing, float64(s.ConstructingConns()))
	g(d.total, float64(s.TotalConns()))
	g(d.max, float64(s.MaxConns()))
	n(d.acquires, float64(s.AcquireCount()))
	n(d.acquireSeconds, s.AcquireDuration().Seconds())
	n(d.emptyAcquires, float64(s.EmptyAcquireCount()))
	n(d.emptyWait, s.EmptyAcquireWaitTime().Seconds())
	n(d.canceled, float64(s.CanceledAcquireCount()))
	n(d.newConns, float64(s.NewConnsCount()))
	n(d.lifetimeDestroyed, float64(s.MaxLifetimeDestroyCount()))
	n(d.idleDestroyed, float64(s.MaxIdleDestroyCount()))
}

var redisDescs = struct {
	hits, misses, timeouts, waits, waitSeconds, total, idle, stale, pending *prometheus.Desc
}{
	hits:        desc("keyward_redis_pool_hits_total", "Times a free connection was found in the pool."),
	misses:      desc("keyward_redis_pool_misses_total", "Times no free connection was in the pool."),
	timeouts:    desc("keyward_redis_pool_timeouts_total", "Times waiting for a connection timed out."),
	waits:       desc("keyward_redis_pool_waits_total", "Times a caller waited for a connection."),
	waitSeconds: desc("keyward_redis_pool_wait_seconds_total", "Time spent waiting for connections."),
	total:       desc("keyward_redis_pool_connections", "Connections in the pool (summed over a cluster's nodes)."),
	idle:        desc("keyward_redis_pool_idle_connections", "Idle connections in the pool."),
	stale:       desc("keyward_redis_pool_stale_connections_total", "Stale connections removed from the pool."),
	pending:     desc("keyward_redis_pool_pending_requests", "Callers waiting for a connection now."),
}

// redisPoolCollector reads go-redis PoolStats at scrape time.
type redisPoolCollector struct{ stats func() *redis.PoolStats }

func (c *redisPoolCollector) Describe(ch chan<- *prometheus.Desc) {
	d := redisDescs
	for _, x := range []*prometheus.Desc{d.hits, d.misses, d.timeouts, d.waits, d.waitSeconds, d.total, d.idle, d.stale, d.pending} {
		ch <- x
	}
}

func (c *redisPoolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	d := redisDescs
	g := func(desc *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v)
	}
	n := func(desc *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, v)
	}
	n(d.hits, float64(s.Hits))
	n(d.misses, float64(s.Misses))
	n(d.timeouts, float64(s.Timeouts))
	n(d.waits, float64(s.WaitCount))
	n(d.waitSeconds, time.Duration(s.WaitDurationNs).Seconds())
	g(d.total, float64(s.TotalConns))
	g(d.idle, float64(s.IdleConns))
	n(d.stale, float64(s.StaleConns))
	g(d.pending, float64(s.PendingRequests))
}
