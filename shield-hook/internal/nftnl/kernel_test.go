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
//	"container" netns <kVethA 198.51.100.1/24, 10.77.0.1/24>
//	                   route 169.254.169.254/32 via 198.51.100.2 (nothing answers it)
//	peer netns        <kVethB 198.51.100.2/24 (app), 198.51.100.53/32 (the forwarder),
//	                   10.77.0.2/24 (app, in a special range)>
const (
	kCtrV4   = "198.51.100.1"
	kPeerV4  = "198.51.100.2"
	kFwd     = "198.51.100.53"
	kCtrPriv = "10.77.0.1"
	kPriv    = "10.77.0.2"
	kMeta    = "169.254.169.254"
	kApp     = 8080
)

// kernelTopo is the two namespaces and the peer's servers.
type kernelTopo struct {
	ctr, peer *scratchNS
	veth      string // the container side
	udp53     atomic.Int64
	udp5353   atomic.Int64
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
	for _, cmd := range [][]string{
		append(c, "ip", "link", "set", "lo", "up"),
		append(c, "ip", "link", "set", k.veth, "up"),
		append(c, "ip", "addr", "add", kCtrV4+"/24", "dev", k.veth),
		append(c, "ip", "addr", "add", kCtrPriv+"/24", "dev", k.veth),
		append(c, "ip", "route", "add", kMeta+"/32", "via", kPeerV4, "dev", k.veth),
		append(p, "ip", "link", "set", "lo", "up"),
		append(p, "ip", "link", "set", vethB, "up"),
		append(p, "ip", "addr", "add", kPeerV4+"/24", "dev", vethB),
		append(p, "ip", "addr", "add", kFwd+"/32", "dev", vethB),
		append(p, "ip", "addr", "add", kPriv+"/24", "dev", vethB),
	} {
		run(cmd...)
	}
	// The network rule: every destination routes through our own veth.
	for _, a := range []string{kPeerV4, kFwd, kPriv, kMeta} {
		out, err := exec.Command("ip", "netns", "exec", ctr.name, "ip", "route", "get", a).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "dev "+k.veth) {
			t.Fatalf("route to %s does not use the test veth %s: %v %s", a, k.veth, err, out)
		}
	}
	k.serve(t)
	return k
}

// serve starts the peer's servers: a TCP application on every address,
// and the forwarder's UDP 53, UDP 5353 and TCP 53, each counting what
// reaches it. The sockets are made inside the peer namespace; the loops
// run until the test's cleanup closes them.
func (k *kernelTopo) serve(t *testing.T) {
	var (
		lns []net.Listener
		pcs []net.PacketConn
	)
	err := k.peer.ns.Do(func() error {
		for _, a := range []string{fmt.Sprintf("0.0.0.0:%d", kApp), kFwd + ":53"} {
			ln, err := net.Listen("tcp4", a)
			if err != nil {
				return err
			}
			lns = append(lns, ln)
		}
		for _, a := range []string{kFwd + ":53", kFwd + ":5353"} {
			pc, err := net.ListenPacket("udp4", a)
			if err != nil {
				return err
			}
			pcs = append(pcs, pc)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
		for _, pc := range pcs {
			_ = pc.Close()
		}
		wg.Wait()
	})
	for i, ln := range lns {
		counter := (*atomic.Int64)(nil)
		if i == 1 {
			counter = &k.tcp53
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				if counter != nil {
					counter.Add(1)
				}
				_, _ = c.Write([]byte("ok"))
				_ = c.Close()
			}
		}()
	}
	for i, pc := range pcs {
		counter := &k.udp53
		if i == 1 {
			counter = &k.udp5353
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 512)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				counter.Add(1)
				_, _ = pc.WriteTo(buf[:n], from)
			}
		}()
	}
}

// exchange opens a socket inside the container namespace (with SO_MARK
// ResolverMark when marked), sends one message and reads the answer.
func (k *kernelTopo) exchange(network, addr string, marked bool) error {
	return k.ctr.ns.Do(func() error {
		d := net.Dialer{Timeout: 3 * time.Second}
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
}

// rejected: the firewall's reject (icmpx admin-prohibited) reaches a TCP
// socket as "host unreachable"; for UDP the output hook's verdict already
// fails the send with EPERM (netfilter refused the packet, it never left).
// A timeout would mean the packet left and went unanswered, which is not
// what the ruleset promises.
func rejected(err error) bool {
	return errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPERM)
}

// addLearned adds addresses to dns_v4 over netlink, each with a timeout,
// the way the resolver does.
func (k *kernelTopo) addLearned(t *testing.T, addrs ...string) {
	t.Helper()
	k.ctr.conn(t, func(c *nftables.Conn) {
		tbl := &nftables.Table{Family: nftables.TableFamilyINet, Name: ruleset.Table}
		set, err := c.GetSetByName(tbl, ruleset.SetDNSV4)
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
				t.Fatalf("%s not in %s after adding it", a, ruleset.SetDNSV4)
			}
		}
	})
}

// TestSpecialAndClosedDNSOnTheKernel: real sockets in a namespace holding
// the hook-mode table (applied over netlink as the hook does, and with
// nft -f). A learned address in a special range is refused although it is
// in dns_v4 (DNS rebinding), a learned ordinary address is reachable, an
// explicit allow CIDR opens a special range deliberately, and only a
// socket carrying ResolverMark reaches the forwarder (closed DNS), on its
// port 53 only.
func TestSpecialAndClosedDNSOnTheKernel(t *testing.T) {
	for _, via := range []string{"netlink", "nft"} {
		t.Run(via, func(t *testing.T) {
			k := newKernelTopo(t)
			text, skipped, err := ruleset.Script{Options: ruleset.Options{DNS: kFwd}}.Render()
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
			peerApp := fmt.Sprintf("%s:%d", kPeerV4, kApp)
			privApp := fmt.Sprintf("%s:%d", kPriv, kApp)

			// Nothing learned yet: the terminal reject.
			if err := k.exchange("tcp4", peerApp, false); !rejected(err) {
				t.Fatalf("unlisted peer: %v, want rejected", err)
			}
			// (a) special addresses learned: still refused at once.
			k.addLearned(t, kPriv, "127.0.0.1", kMeta)
			for _, a := range []string{privApp, kMeta + ":80"} {
				if err := k.exchange("tcp4", a, false); !rejected(err) {
					t.Fatalf("learned special %s: %v, want rejected", a, err)
				}
			}
			// (b) an ordinary learned address is reachable.
			k.addLearned(t, kPeerV4)
			if err := k.exchange("tcp4", peerApp, false); err != nil {
				t.Fatalf("learned %s: %v", kPeerV4, err)
			}
			// (c) an explicit allow CIDR opens the special range.
			k.ctr.nft(t, ruleset.AddElements(ruleset.KindAllow, []string{"10.77.0.0/24"}, false), "-f", "-")
			if err := k.exchange("tcp4", privApp, false); err != nil {
				t.Fatalf("explicitly allowed %s: %v", kPriv, err)
			}
			// (d) closed DNS: unmarked queries are refused and never reach
			// the forwarder, marked ones do, and the mark opens port 53
			// only. The unmarked probes go first: the marked answer that
			// follows on the same path shows the counters are settled.
			for _, pr := range []struct {
				network, addr string
				marked        bool
			}{
				{"udp4", kFwd + ":53", false},
				{"tcp4", kFwd + ":53", false},
				{"udp4", kFwd + ":5353", false},
				{"udp4", kFwd + ":5353", true},
			} {
				if err := k.exchange(pr.network, pr.addr, pr.marked); !rejected(err) {
					t.Fatalf("%s %s marked=%v: %v, want rejected", pr.network, pr.addr, pr.marked, err)
				}
			}
			if err := k.exchange("udp4", kFwd+":53", true); err != nil {
				t.Fatalf("marked UDP query: %v", err)
			}
			if err := k.exchange("tcp4", kFwd+":53", true); err != nil {
				t.Fatalf("marked TCP query: %v", err)
			}
			if u, tc, o := k.udp53.Load(), k.tcp53.Load(), k.udp5353.Load(); u != 1 || tc != 1 || o != 0 {
				t.Fatalf("the forwarder saw udp/53=%d tcp/53=%d udp/5353=%d, want 1, 1, 0", u, tc, o)
			}
		})
	}
}
