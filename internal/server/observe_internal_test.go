package server

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

func TestRouteOf(t *testing.T) {
	for pattern, want := range map[string]string{
		"GET /openapi.json":      "/openapi.json",
		"/v1/":                   "/v1/",
		"/":                      "/",
		"":                       "unmatched",
		"example.com/x":          "/x",
		"POST example.com/v1/a/": "/v1/a/",
	} {
		if got := routeOf(pattern); got != want {
			t.Errorf("routeOf(%q) = %q, want %q", pattern, got, want)
		}
	}
}

func TestLogRequestIDs(t *testing.T) {
	var buf bytes.Buffer
	log := LogRequestIDs(slog.New(slog.NewJSONHandler(&buf, nil)))
	if LogRequestIDs(log) != log {
		t.Error("wrapping twice made another logger")
	}
	ctx := context.WithValue(context.Background(), requestKey{}, &request{id: "r-1"})
	log.With("a", 1).InfoContext(ctx, "inside")
	log.Info("outside")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines: %q", len(lines), buf.String())
	}
	var in, out map[string]any
	json.Unmarshal([]byte(lines[0]), &in)
	json.Unmarshal([]byte(lines[1]), &out)
	if in["request_id"] != "r-1" || in["a"] != float64(1) {
		t.Errorf("line logged in a request: %s, want request_id r-1 and a=1", lines[0])
	}
	if _, has := out["request_id"]; has {
		t.Errorf("line logged outside any request has a request_id: %s", lines[1])
	}
}
