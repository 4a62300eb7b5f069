package nftnl_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/shield-hook/internal/nftnl"
)

// Topology of the kernel test (two namespaces this test creates, joined by
// one veth pair; nothing leaves them):
//
//	"container" netns <kVethA 198.51.100.1/24, 10.77.0.1/24, 2001:db8:77::1/64, fd77::1/64>
//	                   routes to 169.254.169.254 and fd00:ec2::254 via the peer (nothing answers them)
//	peer netns        <kVethB 198.51.100.2/24, 2001:db8:77::2/64 (app),
//	                   198.51.100.53, 2001:db8:77::53 (the forwarders),
//	                   10.77.0.2/24, fd77::2/64 (app, in special ranges),
//	                   10.0.2.3, 169.254.1.1, fd00::3 (the built-in forwarders'
//	                   addresses, UDP 53 only; routed to the peer like the
//	                   metadata address)>
const kApp = 8080

// kFamily is one address family's view of the topology.
type kFamily struct {
	name, tcp, udp string
	set            string // the learned set of the family
	ctr, peer, fwd string
	ctrPriv, priv  string // a special range on the veth pair
	privCIDR, meta string
	bits, privBits string
	special        []string // special addresses put into the learned set
	builtin        []string // built-in forwarder addresses (not the configured one)
	wide           string   // an explicit allow CIDR covering builtin
}

// kFamilies is the topology's IPv4 and IPv6 view.
func kFamilies() []kFamily {
	return []kFamily{
		{name: "v4", tcp: "tcp4", udp: "udp4", set: ruleset.SetDNSV4,
			ctr: "198.51.100.1", peer: "198.51.100.2", fwd: "198.51.100.53", ctrPriv: "10.77.0.1", priv: "10.77.0.2",
			privCIDR: "10.77.0.0/24", meta: "169.254.169.254", bits: "24", privBits: "24",
			special: []string{"10.77.0.2", "127.0.0.1", "169.254.169.254"},
			builtin: []string{ruleset.SlirpDNS, ruleset.PastaDNS}, wide: "0.0.0.0/0"},
		{name: "v6", tcp: "tcp6", udp: "udp6", set: ruleset.SetDNSV6,
			ctr: "2001:db8:77::1", peer: "2001:db8:77::2", fwd: "2001:db8:77::53", ctrPriv: "fd77::1", priv: "fd77::2",
			privCIDR: "fd77::/64", meta: "fd00:ec2::254", bits: "64", privBits: "64",
			// The NAT64 spelling of 10.77.0.2 too: an AAAA answer that would
			// reach an IPv4 address through a translator.
			special: []string{"fd77::2", "::1", "fd00:ec2::254", "64:ff9b::a4d:2"},
			builtin: []string{ruleset.SlirpDNSV6}, wide: "::/0"},
	}
}

// kernelTopo is the two namespaces and the peer's servers.
type kernelTopo struct {
	ctr, peer *scratchNS
	veth      string // the container side
	udp53     atomic.Int64
	udp5353   atomic.Int64
	builtin53 atomic.Int64 // UDP 53 on the built-in forwarder addresses
	tcp53     atomic.Int64
}

func newKernelTopo(t *testing.T) *kernelTopo {
	t.Helper()
	ctr, peer := newScratch(t, "kc"), newScratch(t, "kp")
	k := &kernelTopo{ctr: ctr, peer: peer, veth: fmt.Sprintf("h1k%da", os.Getpid()%100000)}
	vethB := strings.TrimSuffix(k.veth, "a") + "b"
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	c := []string{"ip", "netns", "exec", ctr.name}
	p := []string{"ip", "netns", "exec", peer.name}
	run("ip", "link", "add", k.veth, "netns", ctr.name, "type", "veth", "peer", "name", vethB, "netns", peer.name)
	for _, l := range [][]string{
		append(c, "ip", "link", "set", "lo", "up"),
		append(c, "ip", "link", "set", k.veth, "up"),
		append(p, "ip", "link", "set", "lo", "up"),
		append(p, "ip", "link", "set", vethB, "up"),
	} {
		run(l...)
	}
	for _, f := range kFamilies() {
		six := []string{}
		if f.name == "v6" {
			six = []string{"-6"}
		}
		addr := func(ns []string, a, bits, dev string) []string {
			cmd := append(append(append([]string{}, ns...), "ip"), six...)
			cmd = append(cmd, "addr", "add", a+"/"+bits, "dev", dev)
			if f.name == "v6" {
				cmd = append(cmd, "nodad")
			}
			return cmd
		}
		full := "32"
		if f.name == "v6" {
			full = "128"
		}
		for _, l := range [][]string{
			addr(c, f.ctr, f.bits, k.veth),
			addr(c, f.ctrPriv, f.privBits, k.veth),
			addr(p, f.peer, f.bits, vethB),
			addr(p, f.fwd, full, vethB),
			addr(p, f.priv, f.privBits, vethB),
			append(append(append(append([]string{}, c...), "ip"), six...), "route", "add", f.meta+"/"+full, "via", f.peer, "dev", k.veth),
		} {
			run(l...)
		}
		for _, b := range f.builtin {
			run(addr(p, b, full, vethB)...)
			run(append(append(append(append([]string{}, c...), "ip"), six...), "route", "add", b+"/"+full, "via", f.peer, "dev", k.veth)...)
		}
	}
	// The network rule: every destination routes through our own veth.
	for _, f := range kFamilies() {
		for _, a := range append([]string{f.peer, f.fwd, f.priv, f.meta}, f.builtin...) {
			out, err := exec.Command("ip", "netns", "exec", ctr.name, "ip", "route", "get", a).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "dev "+k.veth) {
				t.Fatalf("route to %s does not use the test veth %s: %v %s", a, k.veth, err, out)
			}
		}
	}
	k.serve(t)
	return k
}

// serve starts the peer's servers: a TCP application on every address,
// and the forwarders' UDP 53, UDP 5353 and TCP 53, each kind counting what
// reaches it. The sockets are made inside the peer namespace; the loops
// run until the test's cleanup closes them.
func (k *kernelTopo) serve(t *testing.T) {
	type counted struct {
		ln net.Listener
		pc net.PacketConn
		n  *atomic.Int64
	}
	var all []counted
	err := k.peer.ns.Do(func() error {
		ln, err := net.Listen("tcp", fmt.Sprintf(":%d", kApp)) // both families
		if err != nil {
			return err
		}
		all = append(all, counted{ln: ln})
		for _, f := range kFamilies() {
			ln, err := net.Listen(f.tcp, net.JoinHostPort(f.fwd, "53"))
			if err != nil {
				return err
			}
			all = append(all, counted{ln: ln, n: &k.tcp53})
			for port, n := range map[string]*atomic.Int64{"53": &k.udp53, "5353": &k.udp5353} {
				pc, err := net.ListenPacket(f.udp, net.JoinHostPort(f.fwd, port))
				if err != nil {
					return err
				}
				all = append(all, counted{pc: pc, n: n})
			}
			for _, b := range f.builtin {
				pc, err := net.ListenPacket(f.udp, net.JoinHostPort(b, "53"))
				if err != nil {
					return err
				}
				all = append(all, counted{pc: pc, n: &k.builtin53})
			}
		}
		return nil
	})
	var wg sync.WaitGroup
	t.Cleanup(func() {
		for _, c := range all {
			if c.ln != nil {
				_ = c.ln.Close()
			} else {
				_ = c.pc.Close()
			}
		}
		wg.Wait()
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c.ln != nil {
				for {
					conn, err := c.ln.Accept()
					if err != nil {
						return
					}
					if c.n != nil {
						c.n.Add(1)
					}
					_, _ = conn.Write([]byte("ok"))
					_ = conn.Close()
				}
			}
			buf := make([]byte, 512)
			for {
				n, from, err := c.pc.ReadFrom(buf)
				if err != nil {
					return
				}
				c.n.Add(1)
				_, _ = c.pc.WriteTo(buf[:n], from)
			}
		}()
	}
}

// exchange opens a socket inside the container namespace (with SO_MARK
// ResolverMark when marked), sends one message and reads the answer.
func (k *kernelTopo) exchange(network, addr string, marked bool) error {
	_, err := k.exchangeFrom(network, nil, addr, marked)
	return err
}

// exchangeFrom is exchange from the local address local (nil: any); it
// returns the local address used.
func (k *kernelTopo) exchangeFrom(network string, local net.Addr, addr string, marked bool) (net.Addr, error) {
	var used net.Addr
	err := k.ctr.ns.Do(func() error {
		d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: local}
		if marked {
			d.Control = func(_, _ string, rc syscall.RawConn) error {
				var serr error
				if err := rc.Control(func(fd uintptr) {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(ruleset.ResolverMark))
				}); err != nil {
					return err
				}
				return serr
			}
		}
		c, err := d.Dial(network, addr)
		if err != nil {
			return err
		}
		defer c.Close()
		used = c.LocalAddr()
		if err := c.SetDeadline(time.Now().Add(3 * time.Second)); err != nil {
			return err
		}
		if _, err := c.Write([]byte("q")); err != nil {
			return err
		}
		buf := make([]byte, 16)
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		if n == 0 {
			return errors.New("empty answer")
		}
		return nil
	})
	return used, err
}

// rejected: the firewall's reject (icmpx admin-prohibited) reaches an
// IPv4 TCP socket as "host unreachable" and an IPv6 one as EACCES (after
// one SYN retransmit, docs/shield-hook.md); for UDP the output hook's
// verdict already fails the send with EPERM (netfilter refused the packet,
// it never left). A timeout would mean the packet left and went
// unanswered, which is not what the ruleset promises.
func rejected(err error) bool {
	for _, e := range []error{syscall.EHOSTUNREACH, syscall.ECONNREFUSED, syscall.EPERM, syscall.EACCES} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// addLearned adds addresses to a learned set over netlink, each with a
// timeout, the way the resolver does.
func (k *kernelTopo) addLearned(t *testing.T, setName string, addrs ...string) {
	t.Helper()
	k.ctr.conn(t, func(c *nftnl.Conn) {
		tbl := &nftables.Table{Family: nftables.TableFamilyINet, Name: ruleset.Table}
		set, err := c.GetSetByName(tbl, setName)
		if err != nil {
			t.Fatal(err)
		}
		var elems []nftables.SetElement
		for _, a := range addrs {
			elems = append(elems, nftables.SetElement{Key: netip.MustParseAddr(a).AsSlice(), Timeout: 10 * time.Minute})
		}
		if err := c.SetAddElements(set, elems); err != nil {
			t.Fatal(err)
		}
		if err := c.Flush(); err != nil {
			t.Fatalf("add learned %v: %v", addrs, err)
		}
		got, err := c.GetSetElements(set)
		if err != nil {
			t.Fatal(err)
		}
		have := map[netip.Addr]bool{}
		for _, e := range got {
			if a, ok := netip.AddrFromSlice(e.Key); ok {
				have[a] = true
			}
		}
		for _, a := range addrs {
			if !have[netip.MustParseAddr(a)] {
				t.Fatalf("%s not in %s after adding it", a, setName)
			}
		}
	})
}

// TestSpecialAndClosedDNSOnTheKernel: real sockets in a namespace holding
// the hook-mode table (applied over netlink as the hook does, and with
// nft -f), for an IPv4 and an IPv6 forwarder. A learned address in a
// special range is refused although it is in the learned set (DNS
// rebinding), a learned ordinary address is reachable, an explicit allow
// CIDR opens a special range deliberately, and only a socket carrying
// ResolverMark reaches the forwarder (closed DNS), on its port 53 only.
func TestSpecialAndClosedDNSOnTheKernel(t *testing.T) {
	for _, f := range kFamilies() {
		for _, via := range []string{"netlink", "nft"} {
			t.Run(f.name+" "+via, func(t *testing.T) { kernelCase(t, f, via) })
		}
	}
}

func kernelCase(t *testing.T, f kFamily, via string) {
	k := newKernelTopo(t)
	// Control: without the table the built-in forwarders answer, so the
	// refusals below are the table's.
	for _, b := range f.builtin {
		if err := k.exchange(f.udp, net.JoinHostPort(b, "53"), false); err != nil {
			t.Fatalf("built-in forwarder %s before the table: %v", b, err)
		}
	}
	text, skipped, err := ruleset.Script{Options: ruleset.Options{DNS: f.fwd}}.Render()
	if err != nil || len(skipped) > 0 {
		t.Fatal(err, skipped)
	}
	if via == "nft" {
		k.ctr.nft(t, text, "-f", "-")
	} else {
		parsed, ok := ruleset.ParseScript(text)
		if !ok {
			t.Fatal("not parsed")
		}
		plan, err := nftnl.NewPlan(parsed, nil)
		if err != nil {
			t.Fatal(err)
		}
		if verrs, err := k.ctr.apply(plan); err != nil || len(verrs) > 0 {
			t.Fatal(err, verrs)
		}
	}
	if errs := ruleset.VerifyHook(k.ctr.listing(t), false); len(errs) > 0 {
		t.Fatalf("applied table does not verify: %v", errs)
	}
	app := func(a string) string { return net.JoinHostPort(a, fmt.Sprint(kApp)) }

	// Nothing learned yet: the terminal reject.
	if err := k.exchange(f.tcp, app(f.peer), false); !rejected(err) {
		t.Fatalf("unlisted peer: %v, want rejected", err)
	}
	// (a) special addresses learned: still refused at once.
	k.addLearned(t, f.set, f.special...)
	for _, a := range []string{app(f.priv), net.JoinHostPort(f.meta, "80")} {
		if err := k.exchange(f.tcp, a, false); !rejected(err) {
			t.Fatalf("learned special %s: %v, want rejected", a, err)
		}
	}
	// (b) an ordinary learned address is reachable.
	k.addLearned(t, f.set, f.peer)
	if err := k.exchange(f.tcp, app(f.peer), false); err != nil {
		t.Fatalf("learned %s: %v", f.peer, err)
	}
	// (c) an explicit allow CIDR opens the special range.
	k.ctr.nft(t, ruleset.AddElements(ruleset.KindAllow, []string{f.privCIDR}, false), "-f", "-")
	if err := k.exchange(f.tcp, app(f.priv), false); err != nil {
		t.Fatalf("explicitly allowed %s: %v", f.priv, err)
	}
	// (d) closed DNS: unmarked queries are refused and never reach the
	// forwarder, marked ones do, and the mark opens port 53 only. The
	// unmarked probes go first: the marked answers that follow on the same
	// path show the counters are settled.
	for _, pr := range []struct {
		network, port string
		marked        bool
	}{
		{f.udp, "53", false},
		{f.tcp, "53", false},
		{f.udp, "5353", false},
		{f.udp, "5353", true},
	} {
		if err := k.exchange(pr.network, net.JoinHostPort(f.fwd, pr.port), pr.marked); !rejected(err) {
			t.Fatalf("%s port %s marked=%v: %v, want rejected", pr.network, pr.port, pr.marked, err)
		}
	}
	if err := k.exchange(f.udp, net.JoinHostPort(f.fwd, "53"), true); err != nil {
		t.Fatalf("marked UDP query: %v", err)
	}
	if err := k.exchange(f.tcp, net.JoinHostPort(f.fwd, "53"), true); err != nil {
		t.Fatalf("marked TCP query: %v", err)
	}
	if u, tc, o := k.udp53.Load(), k.tcp53.Load(), k.udp5353.Load(); u != 1 || tc != 1 || o != 0 {
		t.Fatalf("the forwarder saw udp/53=%d tcp/53=%d udp/5353=%d, want 1, 1, 0", u, tc, o)
	}
	// (e) no riding on the resolver's flow: once a marked socket's query
	// was answered, conntrack holds an established UDP flow for its
	// address and port for a while; an unmarked socket that binds the same
	// port (the resolver's sockets are listed in the netns's
	// /proc/net/udp) must still be refused.
	local, err := k.exchangeFrom(f.udp, nil, net.JoinHostPort(f.fwd, "53"), true)
	if err != nil {
		t.Fatalf("marked UDP query: %v", err)
	}
	if _, err := k.exchangeFrom(f.udp, local, net.JoinHostPort(f.fwd, "53"), false); !rejected(err) {
		t.Fatalf("unmarked query from the resolver's address and port %s: %v, want rejected", local, err)
	}
	if _, err := k.exchangeFrom(f.udp, nil, net.JoinHostPort(f.fwd, "53"), true); err != nil {
		t.Fatalf("marked UDP query: %v", err)
	}
	if u := k.udp53.Load(); u != 3 {
		t.Fatalf("the forwarder saw %d UDP queries, want the 3 marked ones", u)
	}
	// (f) the other built-in forwarders stay closed even under an explicit
	// allow of everything (a profile allowing 10.0.0.0/8 or fc00::/7):
	// their rejects are in the head, before the allow sets. Marked or not.
	allowSet := ruleset.SetAllowV4
	if f.name == "v6" {
		allowSet = ruleset.SetAllowV6
	}
	k.ctr.nft(t, fmt.Sprintf("flush set %s %s %s\n", ruleset.Family, ruleset.Table, allowSet)+
		ruleset.AddElements(ruleset.KindAllow, []string{f.wide}, false), "-f", "-")
	if err := k.exchange(f.tcp, app(f.peer), false); err != nil {
		t.Fatalf("allow %s does not open %s: %v", f.wide, f.peer, err)
	}
	for _, b := range f.builtin {
		for _, marked := range []bool{false, true} {
			if err := k.exchange(f.udp, net.JoinHostPort(b, "53"), marked); !rejected(err) {
				t.Fatalf("built-in forwarder %s marked=%v under allow %s: %v, want rejected", b, marked, f.wide, err)
			}
		}
	}
	if n := k.builtin53.Load(); n != int64(len(f.builtin)) {
		t.Fatalf("the built-in forwarders saw %d queries, want only the %d of the control", n, len(f.builtin))
	}
}
