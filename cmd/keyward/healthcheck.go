package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// healthcheckCommand asks a local server's /healthz (or --path) and fails
// unless it answers 200. It exists for Docker's HEALTHCHECK: the
// distroless image has no shell and no curl, only this binary.
func healthcheckCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("keyward healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("http-addr", "127.0.0.1:8080", "HTTP address of the server (KEYWARD_HTTP_ADDR); a wildcard host means this machine")
	if v := getenv("KEYWARD_HTTP_ADDR"); v != "" {
		*addr = v
	}
	path := fs.String("path", "/healthz", "path to ask, e.g. /readyz")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	useTLS := fs.Bool("tls", getenv("KEYWARD_TLS_CERT_FILE") != "", "the server serves TLS (default: whether KEYWARD_TLS_CERT_FILE is set)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("healthcheck: unexpected arguments: %v", fs.Args())
	}
	target, err := dialable(*addr)
	if err != nil {
		return fmt.Errorf("healthcheck: --http-addr %q: %w", *addr, err)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	scheme := "http"
	// No proxy: a container's HTTP_PROXY must not intercept a loopback probe.
	tr := &http.Transport{Proxy: nil}
	if *useTLS {
		// The certificate names the service, not 127.0.0.1; this probe
		// asks whether the process answers, not who it is.
		scheme, tr.TLSClientConfig = "https", &tls.Config{InsecureSkipVerify: true}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+target+*path, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	client := &http.Client{Transport: tr}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s answered %s: %s", *path, resp.Status, body)
	}
	fmt.Fprintf(stdout, "%s", body)
	return nil
}

// dialable turns a listen address into one to connect to: a server
// listening on 0.0.0.0 or [::] (as in a container) is reached on loopback.
func dialable(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", err
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port), nil
}
