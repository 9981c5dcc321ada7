package extauthz

import (
	"io"
	"net/http"

	"github.com/keyward/keyward/internal/validate"
)

// ForwardAuthPath is the forward-auth endpoint on the HTTP listener.
const ForwardAuthPath = "/v1/auth"

// Routes serves forward-auth at /v1/auth (any method).
func (a *Authz) Routes(mux *http.ServeMux) {
	mux.Handle(ForwardAuthPath, http.HandlerFunc(a.ServeForwardAuth))
}

// ServeForwardAuth answers a proxy's auth subrequest (nginx auth_request,
// Traefik ForwardAuth, Caddy forward_auth): they pass the original request's
// headers, so the key is read from them, as Check reads Envoy's.
//
// The client address for IP allow-lists is the connection's peer, or with
// Options.TrustedProxyHops the matching X-Forwarded-For entry (nginx:
// proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for, hops 1).
// Rate-limit refusals are 429 with Retry-After and X-RateLimit-* headers,
// which allowed answers carry too.
//
// The auth URL itself may require scopes and an environment:
// /v1/auth?scopes=orders:read,orders:write&environment=live (scopes may
// also repeat). The opt-in query parameter credential is read from the
// original URI the proxy reports in X-Forwarded-Uri (Traefik, Caddy) or
// X-Original-Uri (the usual nginx setting); the proxy cannot be told to
// remove it, so strip it in the proxy or leave the option off.
//
// Allowed: 200, empty body, identity headers. Refused: 401 (with
// WWW-Authenticate) or 403, 503 when the key cannot be verified now, 429
// with Retry-After when the client's address has spent its budget of failed
// validations (Options.Throttle; docs/abuse.md), with
// {"error", "reason"} and the same two values in X-Keyward-Error and
// X-Keyward-Reason, for proxies that do not pass the auth response's body
// on (nginx).
func (a *Authz) ServeForwardAuth(w http.ResponseWriter, r *http.Request) {
	query := ""
	if a.queryParam != "" {
		if u := r.Header.Get("X-Forwarded-Uri"); u != "" {
			query = queryOf(u)
		} else {
			query = queryOf(r.Header.Get("X-Original-Uri"))
		}
	}
	secret, found := a.credential(func(c *credHeader) (string, int) {
		vs := r.Header[c.canonical]
		if len(vs) == 0 {
			return "", 0
		}
		return vs[0], len(vs)
	}, query)
	var scopes []string
	environment := ""
	if r.URL.RawQuery != "" {
		q := r.URL.Query()
		for _, s := range q["scopes"] {
			scopes = appendScopes(scopes, s)
		}
		environment = q.Get("environment")
	}
	var xff []string
	if a.hops > 0 {
		xff = r.Header["X-Forwarded-For"]
	}
	v, res := a.decide(r.Context(), found, validate.Request{
		Secret: secret, RequiredScopes: scopes, Environment: environment,
		ClientIP: clientIP(r.RemoteAddr, xff, a.hops), Entry: validate.EntryForwardAuth,
	})

	if v == throttled && a.hops == 0 {
		a.warnSharedProxy(r)
	}

	h := w.Header()
	h.Set("Cache-Control", "no-store")
	if v != allowed {
		d := a.denials[v]
		h.Set("Content-Type", "application/json")
		switch d.status {
		case http.StatusUnauthorized:
			h.Set("Www-Authenticate", Challenge)
		case http.StatusServiceUnavailable:
			h.Set("Retry-After", "1")
		}
		limitHeaders(&res, func(name, value string) { h.Set(name, value) })
		h.Set("X-Keyward-Reason", d.reason)
		h.Set("X-Keyward-Error", d.message)
		w.WriteHeader(d.status)
		io.WriteString(w, d.body)
		return
	}
	a.eachIdentity(res.Key, func(f *field, value string) {
		h[f.canonical] = []string{value}
	})
	limitHeaders(&res, func(name, value string) { h.Set(name, value) })
	w.WriteHeader(http.StatusOK)
}

// warnSharedProxy says, once, that forward-auth throttles what looks like a
// proxy's address: a request that names an original URI or a forwarded
// client came through one, and with --trusted-proxy-hops 0 all of that
// proxy's clients share the proxy's budget of failed validations.
func (a *Authz) warnSharedProxy(r *http.Request) {
	for _, h := range []string{"X-Forwarded-For", "X-Original-Uri", "X-Forwarded-Uri", "X-Real-Ip"} {
		if r.Header.Get(h) != "" {
			a.sharedProxy.Do(func() {
				a.log.WarnContext(r.Context(), "forward-auth is throttling failed validations from an address that looks like a proxy's; "+
					"all of its clients share that budget: set --trusted-proxy-hops (and have the proxy send X-Forwarded-For) so that each client has its own",
					"header", h)
			})
			return
		}
	}
}
