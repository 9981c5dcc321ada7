package testenv

import (
	"strings"
	"testing"
)

func TestStartRedisCluster(t *testing.T) {
	c := StartRedisCluster(t)
	if len(c.Addrs) != 3 {
		t.Fatalf("Addrs = %v, want 3 nodes", c.Addrs)
	}
	for _, n := range c.nodes {
		info, err := n.do("CLUSTER", "INFO")
		if err != nil || !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_slots_assigned:16384") {
			t.Fatalf("CLUSTER INFO on %s: %v\n%s", n.addr, err, info)
		}
	}
	if err := c.FlushAll(); err != nil {
		t.Fatal(err)
	}
	addrs := c.Addrs
	c.Stop()
	for _, a := range addrs {
		if pingRedis(a) == nil {
			t.Errorf("node %s still answers after Stop", a)
		}
	}
	c.Stop() // a second Stop (the cleanup's) is harmless
}
