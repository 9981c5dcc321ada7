package clientaddr

import (
	"net/netip"
	"testing"
)

func TestParse(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.7": "10.0.0.7", "192.0.2.1:1234": "192.0.2.1", "[2001:db8::1]:443": "2001:db8::1",
		"::ffff:10.0.0.1": "10.0.0.1", "": "", "fe80::1%eth0": "", "[fe80::1%eth0]:80": "", "garbage": "",
	} {
		if got := Parse(in); got != addr(want) {
			t.Errorf("Parse(%q) = %v, want %v", in, got, addr(want))
		}
	}
}

func TestForwarded(t *testing.T) {
	for _, tc := range []struct {
		xff  []string
		n    int
		want string
	}{
		{[]string{"1.1.1.1, 203.0.113.9"}, 1, "203.0.113.9"},
		{[]string{"1.1.1.1, 203.0.113.9"}, 2, "1.1.1.1"},
		{[]string{"1.1.1.1", "203.0.113.9, 10.1.1.1"}, 3, "1.1.1.1"},
		{[]string{"203.0.113.9"}, 2, ""},
		{[]string{"garbage"}, 1, ""},
		{[]string{"1.1.1.1", "\xff"}, 1, "1.1.1.1"},
		{[]string{"1.1.1.1"}, 0, ""},
		{nil, 1, ""},
	} {
		if got := Forwarded(tc.xff, tc.n); got != addr(tc.want) {
			t.Errorf("Forwarded(%q, %d) = %v, want %v", tc.xff, tc.n, got, addr(tc.want))
		}
	}
}

func addr(s string) netip.Addr {
	if s == "" {
		return netip.Addr{}
	}
	return netip.MustParseAddr(s)
}
