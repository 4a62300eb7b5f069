package resolver

import (
	"net"
	"net/netip"
	"testing"
)

// TestBoundTo: an inherited listener counts only when bound to exactly
// the address resolv.conf names; IPv4-mapped forms are the same address.
func TestBoundTo(t *testing.T) {
	want := listenAddr()
	for _, tc := range []struct {
		name string
		a    net.Addr
		ok   bool
	}{
		{"udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53}, true},
		{"tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1).To4(), Port: 53}, true},
		{"other port", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5353}, false},
		{"any address", &net.TCPAddr{IP: net.IPv4zero, Port: 53}, false},
		{"other loopback", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 53}, false},
		{"ipv6 loopback", &net.UDPAddr{IP: net.IPv6loopback, Port: 53}, false},
		{"unix", &net.UnixAddr{Name: "/run/x", Net: "unix"}, false},
	} {
		if got := boundTo(tc.a, want); got != tc.ok {
			t.Errorf("%s: boundTo(%v) = %v, want %v", tc.name, tc.a, got, tc.ok)
		}
	}
	if want != netip.MustParseAddrPort("127.0.0.1:53") {
		t.Fatalf("listenAddr %v", want)
	}
}
