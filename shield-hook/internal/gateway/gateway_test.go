package gateway

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"terok.dev/sandbox/shield-hook/internal/nsexec"
)

func TestUsable(t *testing.T) {
	tests := []struct {
		ip     string
		family int
		want   string
	}{
		{"10.0.2.2", netlink.FAMILY_V4, "10.0.2.2"},
		{"0.0.0.0", netlink.FAMILY_V4, ""},
		{"fe80::2", netlink.FAMILY_V6, "fe80::2"},
		{"::", netlink.FAMILY_V6, ""},
		{"10.0.2.2", netlink.FAMILY_V6, ""},
		{"2001:db8::1", netlink.FAMILY_V4, ""},
	}
	for _, tc := range tests {
		if got := usable(net.ParseIP(tc.ip), tc.family); got != tc.want {
			t.Errorf("usable(%s, %d) = %q, want %q", tc.ip, tc.family, got, tc.want)
		}
	}
	if usable(nil, netlink.FAMILY_V4) != "" {
		t.Error("nil gateway")
	}
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%v: %v %s", args, err, out)
	}
}

// TestDiscover reads default gateways from a throw-away netns through a
// netlink socket created inside it.
func TestDiscover(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	name := fmt.Sprintf("hkg%d", os.Getpid()%100000)
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	run(t, "ip", "netns", "add", name+"p")
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name+"p").Run() })
	run(t, "ip", "link", "add", "g0", "netns", name, "type", "veth", "peer", "name", "g1", "netns", name+"p")
	in := []string{"ip", "netns", "exec", name}
	run(t, append(in, "ip", "link", "set", "g0", "up")...)
	run(t, append(in, "ip", "addr", "add", "203.0.113.2/24", "dev", "g0")...)
	ns, err := nsexec.FromPath("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := ns.Netlink()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()

	start := time.Now()
	res, err := Discover(context.Background(), h, 200*time.Millisecond, 20*time.Millisecond)
	if err != nil || res != (Result{}) {
		t.Fatalf("no route: %+v %v", res, err)
	}
	if time.Since(start) < 200*time.Millisecond {
		t.Fatal("did not wait for a late route")
	}

	run(t, append(in, "ip", "route", "add", "default", "via", "203.0.113.1")...)
	run(t, append(in, "ip", "-6", "route", "add", "default", "via", "fe80::2", "dev", "g0")...)
	res, err = Discover(context.Background(), h, time.Second, 20*time.Millisecond)
	if err != nil || res.V4 != "203.0.113.1" || res.V6 != "fe80::2" {
		t.Fatalf("got %+v %v", res, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	run(t, append(in, "ip", "route", "del", "default")...)
	if _, err := Discover(ctx, h, 5*time.Second, 20*time.Millisecond); err == nil {
		t.Fatal("cancelled context ignored")
	}
}
