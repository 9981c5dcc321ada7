// Package extauthz puts Keyward in front of other services: proxies ask it
// on every request whether the request's API key may pass.
//
// Two adapters share one decision (credential extraction, then the one
// verifier of internal/validate, then allow or deny):
//   - Envoy's external authorization, envoy.service.auth.v3.Authorization/Check,
//     on the gRPC listener (Authz.Register);
//   - HTTP forward-auth, /v1/auth on the HTTP listener (Authz.Routes), for
//     nginx auth_request, Traefik ForwardAuth and Caddy forward_auth.
//
// Both answer an allowed request with identity headers for the upstream
// (x-keyward-key-id, x-keyward-environment, x-keyward-scopes and the
// configured x-keyward-meta-<name>), and a refused one with 401 or 403 and
// {"error": …, "reason": "REASON_…"}. When the verifier cannot tell (the
// store is unreachable and the key is not cached) they refuse with 503:
// they never allow what they could not verify, whatever the proxy's own
// failure mode says.
//
// Proxies send every request header, the secret included: nothing here logs
// a request header, and the verifier's errors carry no key material.
package extauthz
