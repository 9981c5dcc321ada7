package extauthz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/textproto"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/keyward/keyward/internal/abuse"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/validate"
)

// Verifier is the one verifier shared with keyward.v1 Validate
// (*validate.Verifier), so caching and revocation behave the same.
type Verifier interface {
	Verify(ctx context.Context, req validate.Request) (validate.Result, error)
}

// Options configures an Authz. The zero value of every field but Verifier
// is usable; New fills in the defaults noted.
type Options struct {
	Verifier Verifier
	// Headers name the request headers that may carry the key, in order of
	// preference (default: x-api-key, authorization). The value of
	// authorization (and proxy-authorization) must use the Bearer scheme;
	// any other header carries the bare key.
	Headers []string
	// QueryParam, if set, also accepts the key from this query parameter of
	// the original request (after the headers), and Envoy removes it from
	// every request it lets through. Off by default: URLs end up in logs.
	QueryParam string
	// StripCredential has Envoy remove the credential headers of an allowed
	// request, so the upstream never sees the secret.
	StripCredential bool
	// Metadata lists the key metadata entries forwarded to the upstream as
	// x-keyward-meta-<name> (lower case; '.', '_' and '/' become '-').
	Metadata []string
	// Strict answers 401 to every refusal and reports disabled and expired
	// keys exactly as unknown ones, so a refusal never tells whether a key
	// exists.
	Strict bool
	// TrustedProxyHops is how many proxies in front of the caller append to
	// X-Forwarded-For; the client address for IP allow-lists is then the
	// hops-th entry from its right. Zero uses the peer's address.
	TrustedProxyHops int
	// Throttle, if set, counts failed validations per client address — the
	// address IP allow-lists use — on the surfaces it is on for (abuse.Check,
	// abuse.ForwardAuth): an address over its budget is refused with 429 and
	// Retry-After before any lookup.
	Throttle *abuse.Throttle
	Logger   *slog.Logger
}

// DefaultHeaders are the credential headers when Options.Headers is empty.
var DefaultHeaders = []string{"x-api-key", "authorization"}

// IdentityPrefix starts every header Keyward adds to an allowed request. A
// client's own headers with this prefix never reach the upstream.
const IdentityPrefix = "x-keyward-"

// The context_extensions Check reads, set per route in Envoy's configuration.
const (
	ExtensionScopes      = "keyward_scopes"      // comma-separated required scopes
	ExtensionEnvironment = "keyward_environment" // required environment
)

// Challenge is the WWW-Authenticate value of every 401.
const Challenge = `Bearer realm="keyward"`

// Authz answers proxies' authorization questions. It is safe for concurrent use.
type Authz struct {
	verifier    Verifier
	log         *slog.Logger
	hops        int
	creds       []credHeader
	queryParam  string
	strip       bool
	meta        []metaField
	queryRemove []string
	denials     [numVerdicts]*denial
	throttle    *abuse.Throttle
	// sharedProxy warns, once, that forward-auth throttles a proxy's address.
	sharedProxy sync.Once
	// identities keeps the Envoy rendering of recently allowed snapshots.
	identities [256]atomic.Pointer[identity]

	// lastWarn and quiet rate-limit the "cannot verify" warning.
	lastWarn atomic.Int64
	quiet    atomic.Int64
}

// credHeader is one header that may carry the key.
type credHeader struct {
	name      string   // lower case, as Envoy sends it
	canonical string   // as net/http keys it
	bearer    bool     // "Bearer <key>"
	remove    []string // []string{name}, shared by responses that remove only it
}

// field is one identity header.
type field struct{ name, canonical string }

func newField(name string) field {
	return field{name: name, canonical: textproto.CanonicalMIMEHeaderKey(name)}
}

var (
	fieldKeyID       = newField("x-keyward-key-id")
	fieldEnvironment = newField("x-keyward-environment")
	fieldScopes      = newField("x-keyward-scopes")
)

type metaField struct {
	key string // the metadata entry
	field
}

var (
	headerName = regexp.MustCompile(`^[a-z0-9!#$%&'*+.^_|~-]+$`)
	metaName   = regexp.MustCompile(`^[A-Za-z0-9._/-]{1,64}$`)
	paramName  = regexp.MustCompile(`^[A-Za-z0-9._~-]{1,64}$`)
)

// New checks o and precomputes every refusal.
func New(o Options) (*Authz, error) {
	if o.Verifier == nil {
		return nil, errors.New("extauthz: no verifier")
	}
	a := &Authz{verifier: o.Verifier, log: o.Logger, queryParam: o.QueryParam, strip: o.StripCredential, hops: o.TrustedProxyHops, throttle: o.Throttle}
	if a.log == nil {
		a.log = slog.Default()
	}
	if o.QueryParam != "" {
		a.queryRemove = []string{o.QueryParam}
	}
	var errs []error
	names := o.Headers
	if len(names) == 0 {
		names = DefaultHeaders
	}
	seen := map[string]bool{}
	for _, n := range names {
		n = strings.ToLower(strings.TrimSpace(n))
		switch {
		case !headerName.MatchString(n):
			errs = append(errs, fmt.Errorf("credential header %q: not a header name", n))
		case strings.HasPrefix(n, IdentityPrefix) || n == "host":
			errs = append(errs, fmt.Errorf("credential header %q: reserved", n))
		case seen[n]:
			errs = append(errs, fmt.Errorf("credential header %q: listed twice", n))
		}
		seen[n] = true
		a.creds = append(a.creds, credHeader{
			name: n, canonical: textproto.CanonicalMIMEHeaderKey(n),
			bearer: n == "authorization" || n == "proxy-authorization",
			remove: []string{n},
		})
	}
	if o.TrustedProxyHops < 0 || o.TrustedProxyHops > 16 {
		errs = append(errs, fmt.Errorf("trusted proxy hops %d: want 0 to 16", o.TrustedProxyHops))
	}
	if o.QueryParam != "" && !paramName.MatchString(o.QueryParam) {
		errs = append(errs, fmt.Errorf("query parameter %q: want 1-64 characters of A-Z a-z 0-9 . _ ~ -", o.QueryParam))
	}
	headers := map[string]string{fieldKeyID.name: "", fieldEnvironment.name: "", fieldScopes.name: ""}
	for _, m := range o.Metadata {
		if !metaName.MatchString(m) {
			errs = append(errs, fmt.Errorf("metadata %q: want 1-64 characters of A-Z a-z 0-9 . _ / -", m))
			continue
		}
		f := newField(IdentityPrefix + "meta-" + strings.NewReplacer(".", "-", "_", "-", "/", "-").Replace(strings.ToLower(m)))
		if other, dup := headers[f.name]; dup {
			errs = append(errs, fmt.Errorf("metadata %q and %q: both would be forwarded as %s", other, m, f.name))
			continue
		}
		headers[f.name] = m
		a.meta = append(a.meta, metaField{key: m, field: f})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("extauthz: %w", err)
	}
	a.denials = denials(o.Strict)
	return a, nil
}

// verdict is the outcome of one check.
type verdict int

const (
	allowed verdict = iota
	missing
	malformed
	notFound
	disabled
	expired
	insufficientScope
	wrongEnvironment
	ipNotAllowed
	rateLimited
	usageExceeded
	unavailable
	throttled // too many failed validations from the client's address
	numVerdicts
)

var verdicts = map[validate.Reason]verdict{
	validate.ReasonValid:             allowed,
	validate.ReasonNotFound:          notFound,
	validate.ReasonMalformed:         malformed,
	validate.ReasonDisabled:          disabled,
	validate.ReasonExpired:           expired,
	validate.ReasonInsufficientScope: insufficientScope,
	validate.ReasonWrongEnvironment:  wrongEnvironment,
	validate.ReasonIPNotAllowed:      ipNotAllowed,
	validate.ReasonRateLimited:       rateLimited,
	validate.ReasonUsageExceeded:     usageExceeded,
}

// denial is one precomputed refusal, shared by every call that ends in it.
type denial struct {
	status  int
	reason  string // keyward.v1 ValidateResponse.Reason name
	message string
	body    string // {"error": message, "reason": reason}
	envoy   *authv3.CheckResponse
}

func denials(strict bool) [numVerdicts]*denial {
	mk := func(status int, reason, message string) *denial {
		b, _ := json.Marshal(struct {
			Error  string `json:"error"`
			Reason string `json:"reason"`
		}{message, reason})
		d := &denial{status: status, reason: reason, message: message, body: string(b)}
		d.envoy = envoyDenial(d)
		return d
	}
	var out [numVerdicts]*denial
	out[missing] = mk(http.StatusUnauthorized, "REASON_MALFORMED", "missing API key")
	out[malformed] = mk(http.StatusUnauthorized, "REASON_MALFORMED", "malformed API key")
	out[notFound] = mk(http.StatusUnauthorized, "REASON_NOT_FOUND", "unknown API key")
	out[disabled] = mk(http.StatusForbidden, "REASON_DISABLED", "API key is disabled")
	out[expired] = mk(http.StatusForbidden, "REASON_EXPIRED", "API key has expired")
	out[insufficientScope] = mk(http.StatusForbidden, "REASON_INSUFFICIENT_SCOPE", "API key lacks a required scope")
	out[wrongEnvironment] = mk(http.StatusForbidden, "REASON_WRONG_ENVIRONMENT", "API key belongs to another environment")
	out[ipNotAllowed] = mk(http.StatusForbidden, "REASON_IP_NOT_ALLOWED", "API key may not be used from this address")
	out[rateLimited] = mk(http.StatusTooManyRequests, "REASON_RATE_LIMITED", "API key rate limit exceeded")
	out[usageExceeded] = mk(http.StatusTooManyRequests, "REASON_USAGE_EXCEEDED", "API key usage quota exhausted")
	// Not a refusal of the key: the answer is unknown, so the request may
	// not pass, and may be retried.
	out[unavailable] = mk(http.StatusServiceUnavailable, "REASON_UNSPECIFIED", "cannot verify API keys now; retry later")
	// Not a refusal of the key either: it was not even looked up.
	out[throttled] = mk(http.StatusTooManyRequests, "REASON_UNSPECIFIED", "too many failed API key validations from this address; retry later")
	if strict {
		// Disabled and expired keys look exactly like unknown ones; scope and
		// environment refusals only ever reach active keys, whose holders
		// learn nothing new from them, so they keep their reason.
		// An address refusal would tell whoever holds a leaked key that it
		// works elsewhere.
		out[disabled], out[expired], out[ipNotAllowed] = out[notFound], out[notFound], out[notFound]
		out[insufficientScope] = mk(http.StatusUnauthorized, "REASON_INSUFFICIENT_SCOPE", "API key lacks a required scope")
		out[wrongEnvironment] = mk(http.StatusUnauthorized, "REASON_WRONG_ENVIRONMENT", "API key belongs to another environment")
	}
	return out
}

// credential finds the presented key: the first configured header that
// carries one, else the opt-in query parameter of rawQuery. header returns
// a header's first value and how many values it has. A credential that is
// present but unusable (two values, an empty bearer token) is returned as ""
// with found set, for the verifier to refuse as malformed.
func (a *Authz) credential(header func(*credHeader) (string, int), rawQuery string) (secret string, found bool) {
	for i := range a.creds {
		c := &a.creds[i]
		v, n := header(c)
		if n == 0 {
			continue
		}
		if c.bearer {
			if len(v) < 7 || !strings.EqualFold(v[:7], "bearer ") {
				continue // another scheme (Basic …): not ours
			}
			v = v[7:]
		}
		if n > 1 {
			return "", true
		}
		return strings.TrimSpace(v), true
	}
	if a.queryParam != "" {
		if v, ok := queryValue(rawQuery, a.queryParam); ok {
			return v, true
		}
	}
	return "", false
}

// queryValue returns the first value of name in a raw query string.
func queryValue(q, name string) (string, bool) {
	for q != "" {
		var kv string
		kv, q, _ = strings.Cut(q, "&")
		k, v, _ := strings.Cut(kv, "=")
		if k != name {
			continue
		}
		if strings.ContainsAny(v, "%+") {
			u, err := url.QueryUnescape(v)
			if err != nil {
				return "", true
			}
			v = u
		}
		return v, true
	}
	return "", false
}

// queryOf is the raw query of a request target ("/p?q" → "q").
func queryOf(target string) string {
	_, q, _ := strings.Cut(target, "?")
	q, _, _ = strings.Cut(q, "#")
	return q
}

// appendScopes adds the comma-separated scopes in s to dst.
func appendScopes(dst []string, s string) []string {
	for s != "" {
		var one string
		one, s, _ = strings.Cut(s, ",")
		if one = strings.TrimSpace(one); one != "" {
			dst = append(dst, one)
		}
	}
	return dst
}

// decide is the one decision behind Check and forward-auth (req.Entry says
// which). res.Key is set only when allowed. A client address over its
// budget of failed validations is refused as throttled, with RetryAfter,
// without asking the verifier.
func (a *Authz) decide(ctx context.Context, found bool, req validate.Request) (verdict, validate.Result) {
	surface := abuse.Check
	if req.Entry == validate.EntryForwardAuth {
		surface = abuse.ForwardAuth
	}
	pass, retry, ok := a.throttle.Admit(surface, req.ClientIP)
	if !ok {
		return throttled, validate.Result{RetryAfter: retry}
	}
	v, res := a.verify(ctx, found, req)
	pass.Done(v != missing && abuse.Failed(res.Reason))
	return v, res
}

// verify asks the verifier and turns its answer into a verdict.
func (a *Authz) verify(ctx context.Context, found bool, req validate.Request) (verdict, validate.Result) {
	// A missing credential is presented to the verifier too, as "": it
	// refuses that as malformed without a lookup (the reason the response
	// reports), and its observers count every request of every entry point.
	res, err := a.verifier.Verify(ctx, req)
	if !found {
		return missing, validate.Result{}
	}
	if err != nil {
		a.cannotVerify(ctx, err)
		return unavailable, validate.Result{}
	}
	if res.Valid {
		return allowed, res
	}
	if v, ok := verdicts[res.Reason]; ok && v != allowed {
		return v, res
	}
	return notFound, validate.Result{} // a reason this package does not know yet: refuse
}

// cannotVerify logs that a check failed closed, at most once a second (an
// outage would otherwise log every request). err carries no key material.
func (a *Authz) cannotVerify(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return // the proxy gave up waiting: its own timeout, not ours to report
	}
	now, last := time.Now().UnixNano(), a.lastWarn.Load()
	if now-last < int64(time.Second) || !a.lastWarn.CompareAndSwap(last, now) {
		a.quiet.Add(1)
		return
	}
	a.log.WarnContext(ctx, "authorization check refused with 503: cannot verify the key",
		"err", err, "more_since_last_warning", a.quiet.Swap(0))
}

// eachIdentity calls emit for every identity header of an allowed key.
func (a *Authz) eachIdentity(k *keys.Key, emit func(f *field, value string)) {
	emit(&fieldKeyID, headerValue(k.ID))
	if k.Environment != "" {
		emit(&fieldEnvironment, headerValue(k.Environment))
	}
	switch len(k.Scopes) {
	case 0:
	case 1:
		emit(&fieldScopes, headerValue(k.Scopes[0]))
	default:
		emit(&fieldScopes, headerValue(strings.Join(k.Scopes, ",")))
	}
	for i := range a.meta {
		m := &a.meta[i]
		if v, ok := k.Metadata[m.key]; ok && v != "" {
			emit(&m.field, headerValue(v))
		}
	}
}

// headerValue makes v safe as a header value: control characters (metadata
// values may hold line breaks) become spaces.
func headerValue(v string) string {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			b := []byte(v)
			for j := i; j < len(b); j++ {
				if c := b[j]; (c < 0x20 && c != '\t') || c == 0x7f {
					b[j] = ' '
				}
			}
			return string(b)
		}
	}
	return v
}
