package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// TLS, mTLS and connection-security settings, defined beside Parse's flags.
type transportSecurity struct {
	// TLSCertFile and TLSKeyFile serve both listeners over TLS. The files
	// are re-read when they change, without a restart.
	TLSCertFile string
	TLSKeyFile  string
	// GRPCClientCAFile turns on client certificates on the gRPC listener:
	// Validate and Envoy's Check then need one that chains to these CAs.
	GRPCClientCAFile string
	// GRPCClientSubjects, if set, limits those callers to certificates whose
	// subject CN, a DNS SAN or a URI SAN is listed.
	GRPCClientSubjects []string
	// RedisSentinelMaster makes the --redis-addr addresses Sentinels
	// watching this master.
	RedisSentinelMaster string
	// RedisTLSCAFile verifies a rediss:// server against these CAs instead
	// of the system's.
	RedisTLSCAFile string
}

// securityFlags defines the flags of transportSecurity on fs. List values
// are kept as text until finish splits them.
func (c *Config) securityFlags(fs *flag.FlagSet) *string {
	fs.StringVar(&c.TLSCertFile, "tls-cert-file", "", "PEM certificate (chain) for both listeners; with --tls-key-file turns on TLS; re-read when it changes (KEYWARD_TLS_CERT_FILE)")
	fs.StringVar(&c.TLSKeyFile, "tls-key-file", "", "PEM private key of --tls-cert-file (KEYWARD_TLS_KEY_FILE)")
	fs.StringVar(&c.GRPCClientCAFile, "grpc-client-ca-file", "", "PEM CA bundle for client certificates on the gRPC listener; Validate and Check then require one (KEYWARD_GRPC_CLIENT_CA_FILE)")
	subjects := fs.String("grpc-client-subjects", "", "comma-separated client certificates allowed to call Validate and Check: subject CN, DNS SAN or URI SAN; empty allows any certificate of --grpc-client-ca-file (KEYWARD_GRPC_CLIENT_SUBJECTS)")
	fs.StringVar(&c.RedisSentinelMaster, "redis-sentinel-master", "", "Redis Sentinel master name; --redis-addr then lists the Sentinels (KEYWARD_REDIS_SENTINEL_MASTER)")
	fs.StringVar(&c.RedisTLSCAFile, "redis-tls-ca-file", "", "PEM CA bundle that verifies a rediss:// server; default: the system's CAs (KEYWARD_REDIS_TLS_CA_FILE)")
	return subjects
}

// TLS reports whether the listeners serve TLS.
func (c *Config) TLS() bool { return c.TLSCertFile != "" }

func (c *Config) validateSecurity() []error {
	var errs []error
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		errs = append(errs, errors.New("--tls-cert-file and --tls-key-file: set both to serve TLS, or neither"))
	}
	for _, f := range []struct{ flag, path string }{
		{"--tls-cert-file", c.TLSCertFile}, {"--tls-key-file", c.TLSKeyFile},
		{"--grpc-client-ca-file", c.GRPCClientCAFile}, {"--redis-tls-ca-file", c.RedisTLSCAFile},
	} {
		if err := readable(f.path); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.flag, err))
		}
	}
	for _, f := range []struct{ flag, path string }{
		{"--grpc-client-ca-file", c.GRPCClientCAFile}, {"--redis-tls-ca-file", c.RedisTLSCAFile},
	} {
		if err := caBundle(f.path); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.flag, err))
		}
	}
	if c.TLSCertFile != "" && c.TLSKeyFile != "" && readable(c.TLSCertFile) == nil && readable(c.TLSKeyFile) == nil {
		if _, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile); err != nil {
			errs = append(errs, fmt.Errorf("--tls-cert-file and --tls-key-file: %s", strings.TrimPrefix(err.Error(), "tls: ")))
		}
	}
	if c.GRPCClientCAFile != "" && !c.TLS() {
		errs = append(errs, errors.New("--grpc-client-ca-file: client certificates need TLS: set --tls-cert-file and --tls-key-file too"))
	}
	if len(c.GRPCClientSubjects) > 0 && c.GRPCClientCAFile == "" {
		errs = append(errs, errors.New("--grpc-client-subjects: needs --grpc-client-ca-file, which verifies the certificates whose subjects it lists"))
	}
	if c.RedisSentinelMaster != "" && c.RedisAddr == "" {
		errs = append(errs, errors.New("--redis-sentinel-master: needs --redis-addr listing the Sentinels"))
	}
	if c.RedisAddr != "" {
		if _, err := c.redisTarget(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.PostgresDSN != "" {
		if _, err := pgconn.ParseConfig(c.PostgresDSN); err != nil {
			errs = append(errs, fmt.Errorf("--postgres-dsn: %s", pgError(err)))
		}
	}
	return errs
}

// readable checks that a configured file exists and can be read; "" is fine.
func readable(path string) error {
	if path == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return err // *PathError names the file and the reason
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		return fmt.Errorf("%s is a directory, want a PEM file", path)
	}
	return nil
}

// caBundle checks that path holds at least one PEM certificate.
func caBundle(path string) error {
	if path == "" {
		return nil
	}
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil // reported by readable
	}
	if !x509.NewCertPool().AppendCertsFromPEM(pem) {
		return fmt.Errorf("%s holds no PEM certificate", path)
	}
	return nil
}

// pgError is pgconn's parse error without the DSN it quotes (pgconn redacts
// the password on a best-effort basis only).
func pgError(err error) string {
	msg := err.Error()
	if _, rest, ok := strings.Cut(msg, "`: "); ok && strings.HasPrefix(msg, "cannot parse `") {
		return rest
	}
	return "not a valid DSN"
}
