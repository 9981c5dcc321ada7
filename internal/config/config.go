// Package config turns flags, KEYWARD_* environment variables and a YAML
// config file into one Config. Precedence: flag, then environment variable,
// then file, then default. The defaults are the zero-setup mode: embedded
// SQLite, in-process cache only.
package config

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/keymat"
)

// Config is everything `keyward serve` needs.
type Config struct {
	GRPCAddr    string
	HTTPAddr    string
	PostgresDSN string `json:"-"`
	DataDir     string
	RedisAddr   string
	// RedisNamespace separates deployments that share one Redis.
	RedisNamespace string
	Environments   []string
	// LocalCache keeps validated keys in process. It is on by default and
	// only then coherent across instances through Redis (or with one embedded
	// instance); with Postgres and no Redis it is switched off at start.
	LocalCache        bool
	LocalCacheEntries int
	NegativeCacheTTL  time.Duration
	LogLevel          slog.Level
	LogFormat         string
	// Auth* configure Envoy's Check and forward-auth (internal/extauthz).
	// AuthHeaders carry the key, in order of preference (lower case).
	AuthHeaders []string
	// AuthQueryParam also accepts the key in this query parameter; "" is off.
	AuthQueryParam string
	// AuthStripCredential removes the credential headers before the upstream.
	AuthStripCredential bool
	// AuthForwardMetadata are metadata entries sent as x-keyward-meta-<name>.
	AuthForwardMetadata []string
	// AuthStrict answers 401 to every refusal, never revealing that a key exists.
	AuthStrict bool
	// AdminKey comes only from KEYWARD_ADMIN_KEY, never a flag: flags show in ps.
	AdminKey string `json:"-"`
	// ConfigFile is the YAML file read (--config, KEYWARD_CONFIG); "" for none.
	ConfigFile string
	transportSecurity
	policySettings
	usageSettings
	secretSettings
	abuseSettings
	replicaSettings

	flags   *flag.FlagSet     // every setting, for WriteYAML
	sources map[string]source // where each flag's value came from
}

// Parse reads args (without the subcommand), the environment through getenv
// and the YAML file named by --config or KEYWARD_CONFIG. Every flag can be
// set in all three: precedence is flag, then KEYWARD_<FLAG> variable, then
// file, then default (layers.go; docs/configuration.md). On a validation
// error Parse returns the Config too, for `keyward config print`.
func Parse(name string, args []string, getenv func(string) string) (*Config, error) {
	c := &Config{AdminKey: getenv("KEYWARD_ADMIN_KEY")}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&c.GRPCAddr, "grpc-addr", "127.0.0.1:9090", "gRPC listen address (KEYWARD_GRPC_ADDR)")
	fs.StringVar(&c.HTTPAddr, "http-addr", "127.0.0.1:8080", "HTTP listen address for REST, console and probes (KEYWARD_HTTP_ADDR)")
	fs.StringVar(&c.PostgresDSN, "postgres-dsn", "", "Postgres DSN; empty uses an embedded SQLite file in the data dir (KEYWARD_POSTGRES_DSN)")
	fs.StringVar(&c.DataDir, "data-dir", "./keyward-data", "directory for the SQLite file and admin.key (KEYWARD_DATA_DIR)")
	fs.StringVar(&c.RedisAddr, "redis-addr", "", "Redis host:port or redis:// / rediss:// URL; comma-separated for a cluster (or Sentinels); empty keeps the cache in process (KEYWARD_REDIS_ADDR)")
	fs.BoolVar(&c.LocalCache, "local-cache", true, "keep validated keys in process (KEYWARD_LOCAL_CACHE)")
	fs.IntVar(&c.LocalCacheEntries, "local-cache-entries", 100000, "most keys held in process (KEYWARD_LOCAL_CACHE_ENTRIES)")
	fs.DurationVar(&c.NegativeCacheTTL, "negative-cache-ttl", 5*time.Second, "how long an unknown key is remembered as unknown (KEYWARD_NEGATIVE_CACHE_TTL)")
	fs.StringVar(&c.RedisNamespace, "redis-namespace", "kw", "prefix of Keyward's Redis keys and channels; one per deployment sharing a Redis (KEYWARD_REDIS_NAMESPACE)")
	envs := fs.String("environments", "live,test", "comma-separated environments keys may belong to (KEYWARD_ENVIRONMENTS)")
	level := fs.String("log-level", "info", "debug, info, warn or error (KEYWARD_LOG_LEVEL)")
	fs.StringVar(&c.LogFormat, "log-format", "text", "text or json (KEYWARD_LOG_FORMAT)")
	authHeaders := fs.String("auth-headers", "x-api-key,authorization", "comma-separated request headers that carry the key for Envoy Check and /v1/auth, in order; authorization takes a Bearer token (KEYWARD_AUTH_HEADERS)")
	fs.StringVar(&c.AuthQueryParam, "auth-query-param", "", "also accept the key in this query parameter of the proxied request, removed before the upstream; empty: off (KEYWARD_AUTH_QUERY_PARAM)")
	fs.BoolVar(&c.AuthStripCredential, "auth-strip-credential", true, "remove the credential headers from requests Envoy lets through (KEYWARD_AUTH_STRIP_CREDENTIAL)")
	authMeta := fs.String("auth-forward-metadata", "", "comma-separated key metadata entries sent to the upstream as x-keyward-meta-<name> (KEYWARD_AUTH_FORWARD_METADATA)")
	fs.BoolVar(&c.AuthStrict, "auth-strict", false, "answer 401 to every refused key, never revealing that it exists (KEYWARD_AUTH_STRICT)")
	subjects := c.securityFlags(fs)
	c.policyFlags(fs)
	c.usageFlags(fs)
	c.secretFlags(fs, getenv)
	c.abuseFlags(fs)
	c.replicaFlags(fs)
	if err := c.layer(fs, args, getenv); err != nil {
		return nil, err
	}
	c.AuthHeaders = splitList(strings.ToLower(*authHeaders))
	c.AuthForwardMetadata = splitList(*authMeta)
	c.GRPCClientSubjects = splitList(*subjects)
	for _, e := range strings.Split(*envs, ",") {
		if e = strings.TrimSpace(e); e != "" {
			c.Environments = append(c.Environments, e)
		}
	}
	var levelErr error
	if err := c.LogLevel.UnmarshalText([]byte(*level)); err != nil {
		levelErr = fmt.Errorf("--log-level %q: want debug, info, warn or error", *level)
	}
	return c, c.annotate(errors.Join(levelErr, c.validate()))
}

func (c *Config) validate() error {
	var errs []error
	for _, a := range []struct{ flag, addr string }{{"--grpc-addr", c.GRPCAddr}, {"--http-addr", c.HTTPAddr}} {
		if err := hostPort(a.addr, true); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", a.flag, a.addr, err))
		}
	}
	if c.GRPCAddr == c.HTTPAddr && !strings.HasSuffix(c.GRPCAddr, ":0") {
		errs = append(errs, fmt.Errorf("--grpc-addr and --http-addr: both are %q; the listeners need different ports", c.GRPCAddr))
	}
	if len(c.Environments) == 0 {
		errs = append(errs, errors.New("--environments: at least one environment is needed"))
	}
	for _, e := range c.Environments {
		if !keymat.ValidEnvironment(e) {
			errs = append(errs, fmt.Errorf("--environments: %q: want 1-16 lowercase letters or digits, starting with a letter", e))
		}
	}
	if c.RedisNamespace == "" || strings.ContainsAny(c.RedisNamespace, "{}") {
		errs = append(errs, errors.New("--redis-namespace: must be non-empty and without braces"))
	}
	if c.LocalCacheEntries < 1 {
		errs = append(errs, errors.New("--local-cache-entries: must be at least 1"))
	}
	if c.NegativeCacheTTL < 0 || c.NegativeCacheTTL > time.Hour {
		errs = append(errs, errors.New("--negative-cache-ttl: want between 0 and 1h"))
	}
	errs = append(errs, c.validateAuth()...)
	errs = append(errs, c.validateSecurity()...)
	errs = append(errs, c.validatePolicy()...)
	errs = append(errs, c.validateUsage()...)
	errs = append(errs, c.validateSecrets()...)
	errs = append(errs, c.validateAbuse()...)
	errs = append(errs, c.validateReplica()...)
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("--log-format %q: want text or json", c.LogFormat))
	}
	return errors.Join(errs...)
}

var (
	headerToken = regexp.MustCompile(`^[a-z0-9!#$%&'*+.^_|~-]+$`)
	paramToken  = regexp.MustCompile(`^[A-Za-z0-9._~-]{1,64}$`)
	metaKey     = regexp.MustCompile(`^[A-Za-z0-9._/-]{1,64}$`)
)

func (c *Config) validateAuth() []error {
	var errs []error
	if len(c.AuthHeaders) == 0 {
		errs = append(errs, errors.New("--auth-headers: at least one header is needed"))
	}
	seen := map[string]bool{}
	for _, h := range c.AuthHeaders {
		switch {
		case !headerToken.MatchString(h):
			errs = append(errs, fmt.Errorf("--auth-headers: %q is not a header name", h))
		case strings.HasPrefix(h, "x-keyward-") || h == "host":
			errs = append(errs, fmt.Errorf("--auth-headers: %q is reserved", h))
		case seen[h]:
			errs = append(errs, fmt.Errorf("--auth-headers: %q is listed twice", h))
		}
		seen[h] = true
	}
	if c.AuthQueryParam != "" && !paramToken.MatchString(c.AuthQueryParam) {
		errs = append(errs, fmt.Errorf("--auth-query-param %q: want 1-64 characters of A-Z a-z 0-9 . _ ~ -", c.AuthQueryParam))
	}
	forwarded := map[string]string{}
	for _, m := range c.AuthForwardMetadata {
		if !metaKey.MatchString(m) {
			errs = append(errs, fmt.Errorf("--auth-forward-metadata: %q: want 1-64 characters of A-Z a-z 0-9 . _ / -", m))
			continue
		}
		h := strings.NewReplacer(".", "-", "_", "-", "/", "-").Replace(strings.ToLower(m))
		if other, dup := forwarded[h]; dup {
			errs = append(errs, fmt.Errorf("--auth-forward-metadata: %q and %q would both be sent as x-keyward-meta-%s", other, m, h))
		}
		forwarded[h] = m
	}
	return errs
}

// splitList splits a comma-separated list, trimming spaces and dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// AdminKeyFile is where a generated admin key is written.
func (c *Config) AdminKeyFile() string { return filepath.Join(c.DataDir, "admin.key") }

// SQLitePath is the embedded store's file.
func (c *Config) SQLitePath() string { return filepath.Join(c.DataDir, "keyward.db") }

// LogValue keeps secrets out of logs: passwords in the DSN and Redis URLs
// are redacted (Redact); the admin and master keys are never included.
func (c *Config) LogValue() slog.Value {
	store := "sqlite:" + c.SQLitePath()
	if c.PostgresDSN != "" {
		store = "postgres:" + Redact("postgres-dsn", c.PostgresDSN)
		if c.PostgresReplicaDSN != "" {
			store += " replica:" + Redact("postgres-replica-dsn", c.PostgresReplicaDSN)
		}
	}
	cache := "in-process"
	if c.RedisAddr != "" {
		cache = "redis:" + Redact("redis-addr", c.RedisAddr)
		if c.RedisSentinelMaster != "" {
			cache += " sentinel-master:" + c.RedisSentinelMaster
		}
	}
	attrs := []slog.Attr{
		slog.String("grpc", c.GRPCAddr), slog.String("http", c.HTTPAddr),
		slog.String("store", store), slog.String("cache", cache),
		slog.Any("environments", c.Environments),
		slog.Any("auth_headers", c.AuthHeaders), slog.Bool("auth_strict", c.AuthStrict),
		slog.Bool("tls", c.TLS()), slog.Bool("grpc_client_certs", c.GRPCClientCAFile != ""),
		slog.Bool("recoverable_keys", c.RecoverableKeys()),
	}
	if c.ConfigFile != "" {
		attrs = append(attrs, slog.String("config_file", c.ConfigFile))
	}
	return slog.GroupValue(attrs...)
}

// Logger builds the process logger.
func (c *Config) Logger() *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
