package resolver

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestHostAddrs lists this namespace's addresses through a route socket,
// as the resolver lists the host's, and compares with the standard
// library's view of the same interfaces.
func TestHostAddrs(t *testing.T) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	h, err := newHostAddrs(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer h.close()
	ifAddrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, ia := range ifAddrs {
		p, err := netip.ParsePrefix(ia.String())
		if err != nil {
			continue
		}
		if !h.contains(p.Addr()) {
			t.Errorf("%s not listed as a host address", p.Addr())
		}
		if p.Addr().Is4() && !h.contains(netip.AddrFrom16(p.Addr().As16())) {
			t.Errorf("IPv4-mapped %s not listed", p.Addr())
		}
	}
	if h.contains(netip.MustParseAddr("203.0.113.254")) {
		t.Error("an address of no interface listed")
	}
	// An old listing is renewed; one that cannot be is fail-closed.
	clock := time.Now().Add(time.Minute)
	h.now = func() time.Time { return clock }
	if h.contains(netip.MustParseAddr("203.0.113.254")) || !h.fetched.Equal(clock) {
		t.Error("stale listing not renewed")
	}
	_ = unix.Close(h.fd)
	h.fd = -1
	clock = clock.Add(time.Minute)
	if !h.contains(netip.MustParseAddr("203.0.113.254")) {
		t.Error("a listing that cannot be renewed must count every address as the host's")
	}
}
