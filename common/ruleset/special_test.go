package ruleset

import (
	"net/netip"
	"testing"
)

// TestIsSpecial pins the edges of the special ranges, the ones of the
// issue-11 review (IPv4-compatible, 6to4 relay, IETF protocol assignments,
// SRv6) included, and that the documentation ranges the tests use for
// their outside hosts stay ordinary.
func TestIsSpecial(t *testing.T) {
	tests := []struct {
		addr    string
		special bool
	}{
		{"::", true},
		{"::1", true},
		{"::1.2.3.4", true}, // IPv4-compatible
		{"::ffff:ffff", true},
		{"::1:0:0", false}, // just past ::/96
		{"192.88.99.1", true},
		{"192.88.98.255", false},
		{"192.88.100.0", false},
		{"2001::1", true},               // Teredo
		{"2001:1ff:ffff:ffff::1", true}, // last /32 of 2001::/23
		{"2001:200::1", false},
		{"2001:db8::1", false}, // documentation, outside 2001::/23
		{"5f00::1", true},
		{"5f00:ffff::1", true},
		{"5f01::1", false},
		{"192.0.2.1", false},
		{"198.51.100.1", false},
		{"203.0.113.1", false},
		{"2001:db8:ffff::1", false},
		{"10.0.2.3", true},
		{"fd00::3", true},
		{"169.254.1.1", true},
		{"::ffff:10.0.2.3", true},
		{"::ffff:203.0.113.1", false}, // judged as the IPv4 address it spells
	}
	for _, tc := range tests {
		if got := IsSpecial(netip.MustParseAddr(tc.addr)); got != tc.special {
			t.Errorf("IsSpecial(%s) = %v, want %v", tc.addr, got, tc.special)
		}
	}
	if !IsSpecial(netip.Addr{}) {
		t.Error("the zero Addr must count as special")
	}
	for _, f := range BuiltinForwarders() {
		if !IsSpecial(netip.MustParseAddr(f)) {
			t.Errorf("built-in forwarder %s not special", f)
		}
	}
}
