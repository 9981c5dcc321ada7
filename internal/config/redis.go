package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// redisQuery are the URL parameters Keyward honours. The rest (timeouts,
// retries, pool sizes) are Keyward's own choice: Validate falls back to the
// store when Redis is slow, and that only works with short timeouts.
var redisQuery = map[string]bool{"db": true, "protocol": true, "client_name": true, "skip_verify": true}

// RedisOptions are the address, credentials and TLS settings of the Redis
// client, from --redis-addr, --redis-sentinel-master and --redis-tls-ca-file.
// --redis-addr is a comma-separated list of either host:port addresses or
// redis:// / rediss:// URLs (go-redis syntax: redis://user:password@host:port/db);
// URLs in one list must differ only in host and port. Two or more addresses
// make a cluster client, unless --redis-sentinel-master makes them Sentinels.
// The caller sets timeouts and retries.
func (c *Config) RedisOptions() (*redis.UniversalOptions, error) {
	t, err := c.redisTarget()
	if err != nil {
		return nil, err
	}
	o := &redis.UniversalOptions{
		Addrs:      t.addrs,
		MasterName: c.RedisSentinelMaster,
	}
	if t.url != nil {
		o.Username, o.Password, o.DB = t.url.Username, t.url.Password, t.url.DB
		o.Protocol, o.ClientName = t.url.Protocol, t.url.ClientName
		if t.url.TLSConfig != nil {
			o.TLSConfig = t.url.TLSConfig.Clone()
			if c.RedisTLSCAFile != "" {
				pem, err := os.ReadFile(c.RedisTLSCAFile)
				if err != nil {
					return nil, fmt.Errorf("--redis-tls-ca-file: %w", err)
				}
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM(pem) {
					return nil, fmt.Errorf("--redis-tls-ca-file: %s holds no PEM certificate", c.RedisTLSCAFile)
				}
				o.TLSConfig.RootCAs = pool
			}
			if len(t.addrs) > 1 || c.RedisSentinelMaster != "" {
				// One name cannot match every node; each dial verifies the
				// node's certificate against its own host instead.
				o.TLSConfig.ServerName = ""
			}
			if o.TLSConfig.MinVersion < tls.VersionTLS12 {
				o.TLSConfig.MinVersion = tls.VersionTLS12
			}
		}
	}
	return o, nil
}

// redisTarget is a parsed --redis-addr.
type redisTarget struct {
	addrs []string
	url   *redis.Options // settings of the URLs; nil for plain addresses
}

// redisTarget parses --redis-addr. Its errors never quote a URL: it may hold
// a password.
func (c *Config) redisTarget() (redisTarget, error) {
	var t redisTarget
	var first *url.URL
	items := splitList(c.RedisAddr)
	if len(items) == 0 {
		return t, errors.New("--redis-addr: no address")
	}
	for i, item := range items {
		n := i + 1
		if !strings.Contains(item, "://") {
			if first != nil {
				return t, fmt.Errorf("--redis-addr: item %d is host:port but item 1 is a URL; use one form for every item", n)
			}
			if err := hostPort(item, false); err != nil {
				// Not quoted: "user:password@host:port" without a scheme lands here.
				return t, fmt.Errorf("--redis-addr: item %d: %w (or a redis:// or rediss:// URL)", n, err)
			}
			t.addrs = append(t.addrs, item)
			continue
		}
		if i > 0 && first == nil {
			return t, fmt.Errorf("--redis-addr: item %d is a URL but item 1 is host:port; use one form for every item", n)
		}
		u, err := url.Parse(item)
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err // url.Error quotes the URL
			}
			return t, fmt.Errorf("--redis-addr: item %d is not a valid URL: %v", n, err)
		}
		if u.Scheme != "redis" && u.Scheme != "rediss" {
			return t, fmt.Errorf("--redis-addr: item %d: scheme %q: want redis:// or rediss:// (TLS)", n, u.Scheme)
		}
		for k := range u.Query() {
			if !redisQuery[k] {
				return t, fmt.Errorf("--redis-addr: item %d: URL parameter %q is not supported; Keyward accepts db, protocol, client_name and skip_verify", n, k)
			}
		}
		o, err := redis.ParseURL(item)
		if err != nil {
			return t, fmt.Errorf("--redis-addr: item %d: %s", n, strings.TrimPrefix(err.Error(), "redis: "))
		}
		if first == nil {
			first, t.url = u, o
		} else if !sameRedisURL(first, u) {
			return t, fmt.Errorf("--redis-addr: item %d differs from item 1 in more than host and port (scheme, user, password, database and parameters must match)", n)
		}
		t.addrs = append(t.addrs, o.Addr)
	}
	if c.RedisTLSCAFile != "" && (t.url == nil || t.url.TLSConfig == nil) {
		return t, errors.New("--redis-tls-ca-file: needs rediss:// URLs in --redis-addr")
	}
	return t, nil
}

// sameRedisURL reports whether a and b differ at most in host and port.
func sameRedisURL(a, b *url.URL) bool {
	a2, b2 := *a, *b
	a2.Host, b2.Host = "", ""
	return a2.String() == b2.String()
}

// hostPort checks a host:port address with a numeric port (0 only where
// zeroOK: a listener then takes any free port).
func hostPort(addr string, zeroOK bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || strings.ContainsAny(host, " /") {
		return errors.New("want host:port")
	}
	p, err := strconv.Atoi(port)
	lowest := 1
	if zeroOK {
		lowest = 0 // any free port
	}
	if err != nil || p < lowest || p > 65535 {
		return fmt.Errorf("port %q: want a number from %d to 65535", port, lowest)
	}
	return nil
}
