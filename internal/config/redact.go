package config

import (
	"net/url"
	"strings"
)

// redacted replaces a secret wherever configuration is shown.
const redacted = "REDACTED"

// Redact returns a flag's value fit to show: passwords in the Postgres DSN
// and in Redis URLs replaced, and the whole value of any flag whose name
// says it is a secret (…-key, …-password, …-secret, …-token). Everything
// that prints or logs configuration goes through here.
func Redact(flagName, value string) string {
	if value == "" {
		return ""
	}
	switch {
	case flagName == "postgres-dsn" || strings.HasSuffix(flagName, "-dsn"):
		return RedactDSN(value)
	case flagName == "redis-addr":
		return redactRedisAddr(value)
	case strings.HasSuffix(flagName, "-url"):
		return redactURL(value)
	}
	for _, suffix := range []string{"-key", "-password", "-secret", "-token"} {
		if strings.HasSuffix(flagName, suffix) {
			return redacted
		}
	}
	return value
}

// dsnSecrets are the DSN parameters holding secrets: the password, and the
// passphrase of an encrypted client key.
var dsnSecrets = map[string]bool{"password": true, "sslpassword": true}

// RedactDSN replaces the passwords of a Postgres DSN, in either form libpq
// accepts: a URL (postgres://user:password@host/db?sslpassword=…) or
// keyword=value pairs (host=h password='p w' dbname=d). A DSN that cannot be
// parsed is not shown at all.
func RedactDSN(dsn string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		return redactURL(dsn)
	}
	if strings.Contains(dsn, "://") {
		return "(unparsable DSN, not shown)"
	}
	pairs, ok := parseKeywordDSN(dsn)
	if !ok {
		return "(unparsable DSN, not shown)"
	}
	var b strings.Builder
	for i, p := range pairs {
		if i > 0 {
			b.WriteByte(' ')
		}
		v := p[1]
		if dsnSecrets[p[0]] {
			v = redacted
		}
		b.WriteString(p[0])
		b.WriteByte('=')
		b.WriteString(quoteDSNValue(v))
	}
	return b.String()
}

// redactURL replaces the password in a URL's user info and in password-like
// query parameters; a URL that does not parse is not shown at all.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" {
		return "(unparsable URL, not shown)"
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), redacted)
	}
	q := u.Query()
	changed := false
	for k := range q {
		if dsnSecrets[strings.ToLower(k)] {
			q.Set(k, redacted)
			changed = true
		}
	}
	if changed {
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// redactRedisAddr redacts each URL in a comma-separated --redis-addr.
func redactRedisAddr(s string) string {
	items := strings.Split(s, ",")
	for i, item := range items {
		if strings.Contains(item, "://") {
			items[i] = redactURL(strings.TrimSpace(item))
		} else if strings.Contains(item, "@") {
			items[i] = "(not shown)" // not a URL, yet has user info: show nothing
		}
	}
	return strings.Join(items, ",")
}

// parseKeywordDSN splits libpq's keyword=value form, where values may be
// single-quoted with backslash escapes. ok is false for a malformed string.
func parseKeywordDSN(s string) (pairs [][2]string, ok bool) {
	i := 0
	skipSpace := func() {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
			i++
		}
	}
	for {
		skipSpace()
		if i >= len(s) {
			return pairs, true
		}
		start := i
		for i < len(s) && s[i] != '=' && s[i] != ' ' && s[i] != '\t' {
			i++
		}
		key := s[start:i]
		skipSpace()
		if key == "" || i >= len(s) || s[i] != '=' {
			return nil, false
		}
		i++ // '='
		skipSpace()
		var v strings.Builder
		if i < len(s) && s[i] == '\'' {
			i++
			closed := false
			for i < len(s) {
				switch c := s[i]; {
				case c == '\\' && i+1 < len(s):
					v.WriteByte(s[i+1])
					i += 2
				case c == '\'':
					i++
					closed = true
				default:
					v.WriteByte(c)
					i++
				}
				if closed {
					break
				}
			}
			if !closed {
				return nil, false
			}
		} else {
			for i < len(s) && s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r' {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				v.WriteByte(s[i])
				i++
			}
		}
		pairs = append(pairs, [2]string{key, v.String()})
	}
}

// quoteDSNValue quotes a keyword DSN value when it needs it.
func quoteDSNValue(v string) string {
	if v != "" && !strings.ContainsAny(v, " \t\n\r'\\") {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}
