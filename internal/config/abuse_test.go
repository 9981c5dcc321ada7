package config

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/abuse"
)

func TestAbuseFlags(t *testing.T) {
	c, err := parseWith(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.AbuseFailuresPerSecond != 20 || c.AbuseBurst != 100 || c.AbuseRefusalFloor != 5*time.Millisecond ||
		!slices.Equal(c.AbuseSurfaces(), []abuse.Surface{abuse.REST, abuse.ForwardAuth}) {
		t.Errorf("ok/defaults: %d/s, burst %d, floor %v, surfaces %v", c.AbuseFailuresPerSecond, c.AbuseBurst, c.AbuseRefusalFloor, c.AbuseSurfaces())
	}

	c, err = parseWith([]string{"--abuse-throttle-surfaces", "rest, grpc,check", "--abuse-burst", "7"},
		map[string]string{"KEYWARD_ABUSE_FAILURES_PER_SECOND": "3", "KEYWARD_ABUSE_REFUSAL_FLOOR": "0"})
	if err != nil {
		t.Fatal(err)
	}
	if c.AbuseFailuresPerSecond != 3 || c.AbuseBurst != 7 || c.AbuseRefusalFloor != 0 ||
		!slices.Equal(c.AbuseSurfaces(), []abuse.Surface{abuse.REST, abuse.GRPC, abuse.Check}) {
		t.Errorf("ok/set: %d/s, burst %d, floor %v, surfaces %v", c.AbuseFailuresPerSecond, c.AbuseBurst, c.AbuseRefusalFloor, c.AbuseSurfaces())
	}
	for _, off := range []string{"none", ""} {
		c, err = parseWith([]string{"--abuse-throttle-surfaces=" + off}, nil)
		if err != nil || len(c.AbuseSurfaces()) != 0 {
			t.Errorf("ok/off %q: %v, %v", off, c.AbuseSurfaces(), err)
		}
	}

	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--abuse-throttle-surfaces", "rest,envoy"}, nil, "abuse-throttle-surfaces"},
		{nil, map[string]string{"KEYWARD_ABUSE_THROTTLE_SURFACES": "http"}, "KEYWARD_ABUSE_THROTTLE_SURFACES"},
		{[]string{"--abuse-failures-per-second", "0"}, nil, "--abuse-failures-per-second"},
		{[]string{"--abuse-burst", "-1"}, nil, "--abuse-burst"},
		{[]string{"--abuse-refusal-floor", "2s"}, nil, "--abuse-refusal-floor"},
	} {
		if _, err := parseWith(tc.args, tc.env); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("refused/%v %v: %v, want an error naming %s", tc.args, tc.env, err, tc.want)
		}
	}
}
