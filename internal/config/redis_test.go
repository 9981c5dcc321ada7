package config

import (
	"slices"
	"testing"
)

func TestRedisOptions(t *testing.T) {
	ca, _ := testPKI(t)
	for _, tc := range []struct {
		name      string
		args      []string
		addrs     []string
		user, pw  string
		db        int
		master    string
		tls       bool
		tlsName   string
		customCAs bool
	}{
		{name: "ok/plain", args: []string{"--redis-addr", "127.0.0.1:6379"}, addrs: []string{"127.0.0.1:6379"}},
		{name: "ok/plain-cluster", args: []string{"--redis-addr", "r1:6379, r2:6379"}, addrs: []string{"r1:6379", "r2:6379"}},
		{name: "ok/url", args: []string{"--redis-addr", "redis://kw:pw@r1:6379/3"}, addrs: []string{"r1:6379"}, user: "kw", pw: "pw", db: 3},
		{name: "ok/url-default-port", args: []string{"--redis-addr", "rediss://:pw@r1"}, addrs: []string{"r1:6379"}, pw: "pw", tls: true, tlsName: "r1"},
		{name: "ok/tls-cluster", args: []string{"--redis-addr", "rediss://kw:pw@r1:7000,rediss://kw:pw@r2:7001", "--redis-tls-ca-file", ca},
			addrs: []string{"r1:7000", "r2:7001"}, user: "kw", pw: "pw", tls: true, tlsName: "", customCAs: true},
		{name: "ok/sentinel", args: []string{"--redis-addr", "redis://:pw@s1:26379,redis://:pw@s2:26379", "--redis-sentinel-master", "mymaster"},
			addrs: []string{"s1:26379", "s2:26379"}, pw: "pw", master: "mymaster"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseWith(tc.args, nil)
			if err != nil {
				t.Fatal(err)
			}
			o, err := c.RedisOptions()
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(o.Addrs, tc.addrs) || o.Username != tc.user || o.Password != tc.pw || o.DB != tc.db || o.MasterName != tc.master {
				t.Errorf("addrs %v user %q password %q db %d master %q", o.Addrs, o.Username, o.Password, o.DB, o.MasterName)
			}
			if (o.TLSConfig != nil) != tc.tls {
				t.Fatalf("TLS = %v, want %v", o.TLSConfig != nil, tc.tls)
			}
			if tc.tls && (o.TLSConfig.ServerName != tc.tlsName || (o.TLSConfig.RootCAs != nil) != tc.customCAs || o.TLSConfig.InsecureSkipVerify) {
				t.Errorf("TLS: server name %q, custom CAs %v, skip verify %v", o.TLSConfig.ServerName, o.TLSConfig.RootCAs != nil, o.TLSConfig.InsecureSkipVerify)
			}
		})
	}
}
