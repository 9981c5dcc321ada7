// Package console serves Keyward's web console: the API Key Management page
// an administrator opens at "/" on the HTTP listener.
//
// The page is plain HTML, CSS and JavaScript modules embedded into the binary
// (no build step, no CDN, works offline). It talks to Keyward only through
// the public REST API under /v1/, with the admin key the user signs in with
// kept in the tab's sessionStorage and sent as a Bearer header.
//
// Assets are served under /assets/<version>/, where version is a hash of
// every embedded file, so they can be cached forever; the page itself is
// revalidated on every load. Every response carries a strict
// Content-Security-Policy (scripts and styles only from this origin, no
// inline script, no framing), nosniff and no-referrer.
package console
