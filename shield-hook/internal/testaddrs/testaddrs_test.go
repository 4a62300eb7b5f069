package testaddrs

import (
	"net/netip"
	"testing"
)

func TestAllowlist(t *testing.T) {
	for _, n := range []int{0, 1, 4, 1000, 70000} {
		got := Allowlist(n)
		if len(got) != n {
			t.Fatalf("Allowlist(%d) has %d entries", n, len(got))
		}
		seen := map[string]bool{}
		bench := netip.MustParsePrefix("198.18.0.0/15")
		doc := netip.MustParsePrefix("2001:db8::/32")
		for _, a := range got {
			ip, err := netip.ParseAddr(a)
			if err != nil {
				t.Fatalf("%q: %v", a, err)
			}
			if !bench.Contains(ip) && !doc.Contains(ip) {
				t.Fatalf("%s is outside 198.18.0.0/15 and 2001:db8::/32", a)
			}
			if seen[a] {
				t.Fatalf("Allowlist(%d) repeats %s", n, a)
			}
			seen[a] = true
		}
	}
}
