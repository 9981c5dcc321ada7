package config

import (
	"slices"
	"strings"
	"testing"
)

func parseWith(args []string, env map[string]string) (*Config, error) {
	return Parse("serve", args, func(k string) string { return env[k] })
}

func TestAuthFlags(t *testing.T) {
	c, err := parseWith(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.AuthHeaders, []string{"x-api-key", "authorization"}) || c.AuthQueryParam != "" ||
		!c.AuthStripCredential || c.AuthStrict || c.AuthForwardMetadata != nil {
		t.Errorf("ok/defaults: %+v", c)
	}

	c, err = parseWith(nil, map[string]string{
		"KEYWARD_AUTH_HEADERS": "X-Token, authorization", "KEYWARD_AUTH_QUERY_PARAM": "api_key",
		"KEYWARD_AUTH_STRIP_CREDENTIAL": "false", "KEYWARD_AUTH_FORWARD_METADATA": "team, plant.id",
		"KEYWARD_AUTH_STRICT": "true",
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.AuthHeaders, []string{"x-token", "authorization"}) || c.AuthQueryParam != "api_key" ||
		c.AuthStripCredential || !c.AuthStrict || !slices.Equal(c.AuthForwardMetadata, []string{"team", "plant.id"}) {
		t.Errorf("ok/environment: %+v", c)
	}

	// A flag wins over its variable.
	c, err = parseWith([]string{"--auth-strict=false", "--auth-strip-credential", "--auth-headers", "x-api-key"},
		map[string]string{"KEYWARD_AUTH_STRICT": "true", "KEYWARD_AUTH_STRIP_CREDENTIAL": "false", "KEYWARD_AUTH_HEADERS": "x-token"})
	if err != nil {
		t.Fatal(err)
	}
	if c.AuthStrict || !c.AuthStripCredential || !slices.Equal(c.AuthHeaders, []string{"x-api-key"}) {
		t.Errorf("ok/flag-wins: %+v", c)
	}
}

func TestAuthFlagsRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"fail/strict-not-a-bool", nil, map[string]string{"KEYWARD_AUTH_STRICT": "yes please"}, "KEYWARD_AUTH_STRICT"},
		{"fail/strip-not-a-bool", nil, map[string]string{"KEYWARD_AUTH_STRIP_CREDENTIAL": "nope"}, "KEYWARD_AUTH_STRIP_CREDENTIAL"},
		{"fail/header-name", []string{"--auth-headers", "x api key"}, nil, "--auth-headers"},
		{"fail/identity-header", []string{"--auth-headers", "x-keyward-key-id"}, nil, "reserved"},
		{"fail/duplicate-header", []string{"--auth-headers", "x-api-key,X-Api-Key"}, nil, "twice"},
		{"fail/no-header", []string{"--auth-headers", " , "}, nil, "at least one"},
		{"fail/query-param", []string{"--auth-query-param", "api key"}, nil, "--auth-query-param"},
		{"fail/metadata-name", []string{"--auth-forward-metadata", "a b"}, nil, "--auth-forward-metadata"},
		{"fail/metadata-collision", []string{"--auth-forward-metadata", "plant.id,plant_id"}, nil, "x-keyward-meta-plant-id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseWith(tc.args, tc.env)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one naming %q", err, tc.want)
			}
		})
	}
}
