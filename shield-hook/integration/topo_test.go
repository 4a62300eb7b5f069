package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"terok.dev/sandbox/shield-hook/internal/nsexec"
)

// Test topology (all inside two network namespaces this test creates; the
// host's own namespace and uplink are never touched):
//
//	container netns  <vethA 203.0.113.2 / 2001:db8:1::2>
//	     |  default via 203.0.113.1 / 2001:db8:1::1
//	outside netns    <vethB 203.0.113.1 / 2001:db8:1::1>  ("gateway")
//	                 lo: 198.51.100.10 (allowlisted), .20 (not), .30 (allowed+denied),
//	                     .53 (DNS resolver), 172.16.99.1 (private),
//	                     2001:db8:2::10 (allowlisted), 2001:db8:2::20 (not), fd99::1 (private)
const (
	ctrV4     = "203.0.113.2"
	gwV4      = "203.0.113.1"
	ctrV6     = "2001:db8:1::2"
	gwV6      = "2001:db8:1::1"
	allowV4   = "198.51.100.10"
	otherV4   = "198.51.100.20"
	deniedV4  = "198.51.100.30"
	dnsV4     = "198.51.100.53"
	rogueDNS  = "198.51.100.54" // a second resolver the container must not use
	privV4    = "172.16.99.1"
	allowV6   = "2001:db8:2::10"
	otherV6   = "2001:db8:2::20"
	privV6    = "fd99::1"
	svcPort   = 18731 // a loopback (host-service) port
	otherPort = 18799 // a port on the gateway that is not a service port
	appPort   = 8080
	udpPort   = 9999
)

type topo struct {
	t        testing.TB
	ctr, out string // netns names
	vethA    string
	ctrNS    *nsexec.NS
	outNS    *nsexec.NS
	pid      int // a process living in the container netns
}

func sh(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

var topoSeq struct {
	sync.Mutex
	n int
}

func newTopo(t testing.TB) *topo {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces (CI runs as root)")
	}
	topoSeq.Lock()
	topoSeq.n++
	n := topoSeq.n
	topoSeq.Unlock()
	pfx := fmt.Sprintf("hk%d%d", os.Getpid()%100000, n)
	tp := &topo{t: t, ctr: pfx + "c", out: pfx + "o", vethA: pfx + "a"}
	vethB := pfx + "b"
	t.Cleanup(func() {
		for _, ns := range []string{tp.ctr, tp.out} {
			_ = exec.Command("ip", "netns", "del", ns).Run()
		}
	})
	sh(t, "ip", "netns", "add", tp.ctr)
	sh(t, "ip", "netns", "add", tp.out)
	sh(t, "ip", "link", "add", tp.vethA, "netns", tp.ctr, "type", "veth", "peer", "name", vethB, "netns", tp.out)
	c := []string{"ip", "netns", "exec", tp.ctr}
	o := []string{"ip", "netns", "exec", tp.out}
	for _, cmd := range [][]string{
		append(c, "ip", "link", "set", "lo", "up"),
		append(c, "ip", "link", "set", tp.vethA, "up"),
		append(c, "ip", "addr", "add", ctrV4+"/24", "dev", tp.vethA),
		append(c, "ip", "-6", "addr", "add", ctrV6+"/64", "dev", tp.vethA, "nodad"),
		append(o, "ip", "link", "set", "lo", "up"),
		append(o, "ip", "link", "set", vethB, "up"),
		append(o, "ip", "addr", "add", gwV4+"/24", "dev", vethB),
		append(o, "ip", "-6", "addr", "add", gwV6+"/64", "dev", vethB, "nodad"),
		append(c, "ip", "route", "add", "default", "via", gwV4),
		append(c, "ip", "-6", "route", "add", "default", "via", gwV6),
	} {
		sh(t, cmd...)
	}
	for _, a := range []string{allowV4, otherV4, deniedV4, dnsV4, rogueDNS, privV4} {
		sh(t, append(o, "ip", "addr", "add", a+"/32", "dev", "lo")...)
	}
	for _, a := range []string{allowV6, otherV6, privV6} {
		sh(t, append(o, "ip", "-6", "addr", "add", a+"/128", "dev", "lo", "nodad")...)
	}
	// The network rule: every destination must route through our veth.
	for _, a := range []string{allowV4, otherV4, deniedV4, dnsV4, rogueDNS, privV4, gwV4, allowV6, otherV6, privV6, gwV6} {
		if r := sh(t, append(c, "ip", "route", "get", a)...); !strings.Contains(r, "dev "+tp.vethA) {
			t.Fatalf("route to %s does not use the test veth %s: %s", a, tp.vethA, r)
		}
	}
	var err error
	if tp.ctrNS, err = nsexec.FromPath("/run/netns/" + tp.ctr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tp.ctrNS.Close() })
	if tp.outNS, err = nsexec.FromPath("/run/netns/" + tp.out); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tp.outNS.Close() })

	// The "container process": podman hands the hook the PID of the
	// container's init, which lives in the container netns.
	sleep := exec.Command("ip", "netns", "exec", tp.ctr, "sleep", "600")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sleep.Process.Kill(); _ = sleep.Wait() })
	tp.pid = sleep.Process.Pid
	waitNetns(t, tp.pid, tp.ctr)
	tp.serve()
	return tp
}

// waitNetns waits until pid has switched into the named netns (ip netns exec
// does setns then exec, so there is a short window).
func waitNetns(t testing.TB, pid int, name string) {
	t.Helper()
	want, err := os.Stat("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 500; i++ {
		got, err := os.Stat(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err == nil && os.SameFile(want, got) {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			if strings.TrimSpace(string(b)) == "sleep" {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("pid %d never entered netns %s", pid, name)
}

// serve starts small Go servers in the outside netns: TCP "ok" responders
// and UDP echo servers. Sockets keep the namespace they were created in, so
// after creation they are served from ordinary goroutines.
func (tp *topo) serve() {
	t := tp.t
	type addr struct {
		network, hostport string
	}
	var addrs []addr
	for _, a := range []string{allowV4, otherV4, deniedV4, privV4, allowV6, otherV6, privV6} {
		addrs = append(addrs, addr{"tcp", net.JoinHostPort(a, fmt.Sprint(appPort))}, addr{"udp", net.JoinHostPort(a, fmt.Sprint(udpPort))})
	}
	for _, a := range []string{gwV4, gwV6} {
		addrs = append(addrs, addr{"tcp", net.JoinHostPort(a, fmt.Sprint(svcPort))}, addr{"tcp", net.JoinHostPort(a, fmt.Sprint(otherPort))})
	}
	// A DNS-port UDP echo on a non-resolver address: reachable before the
	// shield, rejected after.
	addrs = append(addrs, addr{"udp", net.JoinHostPort(otherV4, "53")}, addr{"tcp", net.JoinHostPort(otherV4, "53")})
	var closers []func()
	err := tp.outNS.Do(func() error {
		for _, a := range addrs {
			if a.network == "tcp" {
				l, err := net.Listen("tcp", a.hostport)
				if err != nil {
					return err
				}
				closers = append(closers, func() { _ = l.Close() })
				go func() {
					for {
						c, err := l.Accept()
						if err != nil {
							return
						}
						_, _ = c.Write([]byte("ok\n"))
						_ = c.Close()
					}
				}()
			} else {
				pc, err := net.ListenPacket("udp", a.hostport)
				if err != nil {
					return err
				}
				closers = append(closers, func() { _ = pc.Close() })
				go func() {
					buf := make([]byte, 1500)
					for {
						n, from, err := pc.ReadFrom(buf)
						if err != nil {
							return
						}
						_, _ = pc.WriteTo(buf[:n], from)
					}
				}()
			}
		}
		return nil
	})
	t.Cleanup(func() {
		for _, c := range closers {
			c()
		}
	})
	if err != nil {
		t.Fatalf("start servers in outside netns: %v", err)
	}
}

// outcome of a probe from the container netns.
type outcome struct {
	ok      bool
	err     error
	elapsed time.Duration
}

// guard bounds a probe; a rejection arrives in milliseconds, so reaching the
// guard means the packet was dropped silently (or never answered).
const guard = 5 * time.Second

func (tp *topo) tcp(host string, port int) outcome {
	var o outcome
	start := time.Now()
	err := tp.ctrNS.Do(func() error {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(host, fmt.Sprint(port)), guard)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(guard))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return err
		}
		if line != "ok\n" {
			return fmt.Errorf("unexpected reply %q", line)
		}
		return nil
	})
	o.elapsed, o.err, o.ok = time.Since(start), err, err == nil
	return o
}

func (tp *topo) udp(host string, port int) outcome {
	var o outcome
	start := time.Now()
	err := tp.ctrNS.Do(func() error {
		c, err := net.Dial("udp", net.JoinHostPort(host, fmt.Sprint(port)))
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(guard))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 16)
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		if string(buf[:n]) != "ping" {
			return fmt.Errorf("unexpected reply %q", buf[:n])
		}
		return nil
	})
	o.elapsed, o.err, o.ok = time.Since(start), err, err == nil
	return o
}

func (tp *topo) mustReach(what string, o outcome) {
	tp.t.Helper()
	if !o.ok {
		tp.t.Errorf("%s: want reachable, got %v", what, o.err)
	}
}

// mustDrop requires a connect that gets no answer at all: a SYN the
// kernel dropped (interactive mode's queue with nobody holding it) leaves
// the dial to time out after wait, where a reject fails it at once.
func (tp *topo) mustDrop(what, host string, port int, wait time.Duration) {
	tp.t.Helper()
	err := tp.ctrNS.Do(func() error {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(host, fmt.Sprint(port)), wait)
		if err == nil {
			_ = c.Close()
		}
		return err
	})
	var ne net.Error
	if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
		tp.t.Errorf("%s: want dropped (dial timeout), got %v", what, err)
	}
}

// mustReject requires a fast, explicit refusal: ICMP admin-prohibited turns
// into EHOSTUNREACH/ECONNREFUSED/EACCES/EPERM, never a timeout.
func (tp *topo) mustReject(what string, o outcome) {
	tp.t.Helper()
	if o.ok {
		tp.t.Errorf("%s: want rejected, but it was reachable", what)
		return
	}
	tp.t.Logf("%s: rejected in %s: %v", what, o.elapsed.Round(time.Microsecond), o.err)
	var ne net.Error
	if errors.As(o.err, &ne) && ne.Timeout() {
		tp.t.Errorf("%s: dropped silently (timeout after %s), want a fast reject", what, o.elapsed)
		return
	}
	if !errors.Is(o.err, syscall.EHOSTUNREACH) && !errors.Is(o.err, syscall.ECONNREFUSED) &&
		!errors.Is(o.err, syscall.EACCES) && !errors.Is(o.err, syscall.EPERM) {
		tp.t.Errorf("%s: unexpected error kind %v", what, o.err)
	}
}

// nft runs nft in the container netns.
func (tp *topo) nft(args ...string) (string, error) {
	return tp.ctrNS.Run(context.Background(), nil, append([]string{"nft"}, args...)...)
}

// stateDir makes a fresh 0700 state directory.
func stateDir(t testing.TB) string {
	d := filepath.Join(t.TempDir(), "shield")
	if err := os.Mkdir(d, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}
