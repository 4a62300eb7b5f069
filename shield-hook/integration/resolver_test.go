package integration

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/shield-hook/internal/hook"
	"terok.dev/sandbox/shield-hook/internal/nsexec"
)

// resolverVer is the bundle version the hook under test expects.
var resolverVer = strconv.Itoa(shieldbundle.BundleVersion)

// testUpstream is an authoritative test DNS server in the outside netns at
// dnsV4:53 (UDP and TCP) that counts every query it receives, by name and
// type, so a test can prove that nothing of a refused query left the
// container's namespace.
type testUpstream struct {
	mu     sync.Mutex
	counts map[string]int // "name TYPE" (lowercase name, trailing dot)
	raw    []string       // every question name as received (letter case kept)
	tcp    int
	zone   map[string][]dns.RR
	// wildcard, if set, answers every otherwise unknown subdomain of
	// nameListed (the benchmarks' uncacheable names).
	wildcard dns.RR
	// hostSelf is an address of the host's own namespace outside the
	// special ranges (nameSelf's answer), invalid when it has none.
	hostSelf netip.Addr
}

// hostAddress returns an address of this (the host's) network namespace
// outside the special ranges, if there is one. Nothing is ever sent to it:
// the test only checks that the resolver does not learn it.
func hostAddress() netip.Addr {
	addrs, _ := net.InterfaceAddrs()
	for _, ia := range addrs {
		if p, err := netip.ParsePrefix(ia.String()); err == nil && p.Addr().Is4() && !ruleset.IsSpecial(p.Addr()) {
			return p.Addr()
		}
	}
	return netip.Addr{}
}

func (u *testUpstream) count(name string, qtype uint16) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.counts[strings.ToLower(dns.Fqdn(name))+" "+dns.TypeToString[qtype]]
}

func (u *testUpstream) total() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, c := range u.counts {
		n += c
	}
	return n
}

func (u *testUpstream) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) == 1 {
		q := req.Question[0]
		name := strings.ToLower(q.Name)
		u.mu.Lock()
		u.counts[name+" "+dns.TypeToString[q.Qtype]]++
		u.raw = append(u.raw, q.Name)
		if w.RemoteAddr().Network() == "tcp" {
			u.tcp++
		}
		u.mu.Unlock()
		rrs, ok := u.zone[name]
		if !ok && u.wildcard != nil && strings.HasSuffix(name, "."+nameListed+".") {
			rr := dns.Copy(u.wildcard)
			rr.Header().Name = q.Name
			rrs, ok = []dns.RR{rr}, true
		}
		if !ok {
			m.Rcode = dns.RcodeNameError
		}
		for _, rr := range rrs {
			if rr.Header().Rrtype == q.Qtype || rr.Header().Rrtype == dns.TypeCNAME {
				m.Answer = append(m.Answer, rr)
				if c, ok := rr.(*dns.CNAME); ok { // include the chain, as a recursive resolver does
					for _, t := range u.zone[c.Target] {
						if t.Header().Rrtype == q.Qtype {
							m.Answer = append(m.Answer, t)
						}
					}
				}
			}
		}
	}
	if w.RemoteAddr().Network() == "udp" {
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size)
	}
	_ = w.WriteMsg(m)
}

// Test names and what the test upstream answers for them.
const (
	nameListed   = "allowed.shield.test"
	nameRebind   = "rebind.allowed.shield.test"
	nameCNAME    = "cname.allowed.shield.test"
	nameTarget   = "target.cdn.shield.test"
	nameBig      = "big.allowed.shield.test"
	nameLater    = "later.shield.test"
	nameSelf     = "self.allowed.shield.test"
	laterV4      = "198.51.100.30"
	bigAddresses = 100
)

func startTestUpstream(t *testing.T, tp *topo) *testUpstream {
	t.Helper()
	u := &testUpstream{counts: map[string]int{}, zone: map[string][]dns.RR{}}
	add := func(s string) {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		n := strings.ToLower(rr.Header().Name)
		u.zone[n] = append(u.zone[n], rr)
	}
	add(nameListed + ". 60 IN A " + allowV4)
	add(nameListed + ". 60 IN AAAA " + allowV6)
	// Rebinding answers for a listed name: loopback, the slirp4netns
	// host, the metadata address, IPv6 loopback and unique-local.
	for _, a := range []string{"10.0.2.2", "169.254.169.254", "127.0.0.1"} {
		add(nameRebind + ". 60 IN A " + a)
	}
	add(nameRebind + ". 60 IN AAAA ::1")
	add(nameRebind + ". 60 IN AAAA fd00::2")
	add(nameCNAME + ". 600 IN CNAME " + nameTarget + ".")
	add(nameTarget + ". 600 IN A " + otherV4)
	for i := 0; i < bigAddresses; i++ {
		add(fmt.Sprintf("%s. 60 IN A 203.0.113.%d", nameBig, 100+i))
	}
	add(nameLater + ". 60 IN A " + laterV4)
	if u.hostSelf = hostAddress(); u.hostSelf.IsValid() {
		add(nameSelf + ". 60 IN A " + u.hostSelf.String())
	}
	var pc net.PacketConn
	var l net.Listener
	err := tp.outNS.Do(func() error {
		var err error
		if pc, err = net.ListenPacket("udp", net.JoinHostPort(dnsV4, "53")); err != nil {
			return err
		}
		l, err = net.Listen("tcp", net.JoinHostPort(dnsV4, "53"))
		return err
	})
	if err != nil {
		t.Fatalf("test upstream: %v", err)
	}
	us := &dns.Server{PacketConn: pc, Handler: u}
	ts := &dns.Server{Listener: l, Handler: u}
	go func() { _ = us.ActivateAndServe() }()
	go func() { _ = ts.ActivateAndServe() }()
	t.Cleanup(func() { _ = us.Shutdown(); _ = ts.Shutdown() })
	return u
}

// query asks server:53 from an ordinary socket inside the container netns.
func (tp *topo) query(server, name string, qtype uint16, network string) (*dns.Msg, error) {
	var resp *dns.Msg
	err := tp.ctrNS.Do(func() error {
		c := &dns.Client{Net: network, Timeout: 3 * time.Second, UDPSize: 1232}
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), qtype)
		m.SetEdns0(1232, false)
		r, _, err := c.Exchange(m, net.JoinHostPort(server, "53"))
		resp = r
		return err
	})
	return resp, err
}

func answerAddrs(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		switch v := rr.(type) {
		case *dns.A:
			out = append(out, v.A.String())
		case *dns.AAAA:
			out = append(out, v.AAAA.String())
		}
	}
	return out
}

// resolverBundle writes a resolver-tier bundle with the current ruleset
// generator: upstream dnsV4, nameListed on the profile's domain list.
func resolverBundle(t *testing.T, dir string) {
	t.Helper()
	writeBundle(t, dir, ruleset.Script{Options: ruleset.Options{DNS: dnsV4, LoopbackPorts: []int{svcPort}}})
	writeFile(t, dir, shieldbundle.FileDNSTier, shieldbundle.TierResolver+"\n")
	writeFile(t, dir, shieldbundle.FileUpstreamDNS, dnsV4+"\n")
	writeFile(t, dir, shieldbundle.FileProfileDomains, nameListed+"\n")
}

// startedResolver runs createRuntime on a resolver bundle and returns the
// resolver's PID, checked to be ours and to live in the container netns.
func startedResolver(t *testing.T, tp *topo, dir string) int {
	t.Helper()
	r := runHook(t, "createRuntime", ociState(tp.pid, dir, resolverVer))
	if r.code != 0 {
		t.Fatalf("hook: %+v\n%s", r, readFile(t, filepath.Join(dir, shieldbundle.FileHookErrorLog)))
	}
	pid, ok := shieldbundle.ResolverPID(dir)
	if !ok {
		t.Fatalf("resolver.pid does not name our resolver: %q", readFile(t, filepath.Join(dir, shieldbundle.FileResolverPID)))
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	if line := resolverReport(t, dir); line != shieldbundle.ResolverReadyOK {
		t.Fatalf("resolver.ready: %q", line)
	}
	ctrNS, _ := os.Stat("/run/netns/" + tp.ctr)
	if got, err := os.Stat(fmt.Sprintf("/proc/%d/ns/net", pid)); err != nil || !os.SameFile(ctrNS, got) {
		t.Fatalf("resolver does not run in the container netns")
	}
	return pid
}

// resolverReport waits, as the runner's post-start verification does,
// for the resolver's start report (the hook does not wait for it).
func resolverReport(t *testing.T, dir string) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		line, err := shieldbundle.ReadResolverReady(dir)
		if err != nil {
			t.Fatal(err)
		}
		if line != "" {
			return line
		}
		if time.Now().After(deadline) {
			t.Fatal("no resolver.ready within 5s")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// onlyNetAdmin checks every thread of the resolver: CAP_NET_ADMIN (bit
// 12) is the only capability left in the effective, permitted and bounding
// sets, none is inheritable or ambient, and no_new_privs is set.
func onlyNetAdmin(t *testing.T, pid int) {
	t.Helper()
	const netAdmin = "0000000000001000"
	want := map[string]string{"CapEff": netAdmin, "CapPrm": netAdmin, "CapBnd": netAdmin, "CapInh": "0000000000000000", "CapAmb": "0000000000000000", "NoNewPrivs": "1"}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("threads of the resolver: %v", err)
	}
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, task.Name()))
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok {
				got[k] = strings.TrimSpace(v)
			}
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("resolver thread %s: %s = %s, want %s", task.Name(), k, got[k], v)
			}
		}
	}
}

func learned(t *testing.T, tp *topo) string {
	t.Helper()
	v4, err := tp.nft("list", "set", "inet", ruleset.Table, ruleset.SetDNSV4)
	if err != nil {
		t.Fatal(err)
	}
	v6, err := tp.nft("list", "set", "inet", ruleset.Table, ruleset.SetDNSV6)
	if err != nil {
		t.Fatal(err)
	}
	return v4 + v6
}

// exitsWithin reports whether pid exits within d (pidfd poll).
func exitsWithin(t *testing.T, pid int, d time.Duration) bool {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return true // already gone
	}
	defer unix.Close(fd)
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) { // the Go runtime's preemption signals
			continue
		}
		return err == nil && n > 0
	}
}

// TestResolverTier: the hook starts the container's resolver; it forwards
// listed names only (address types only) and learns only ordinary
// addresses; no packet of a refused query reaches the upstream; ordinary
// sockets cannot reach the upstream at all; SIGHUP reloads; a flood of
// refused names leaves dns.log within its bound; poststop stops it.
func TestResolverTier(t *testing.T) {
	tp := newTopo(t)
	up := startTestUpstream(t, tp)
	dir := stateDir(t)
	resolverBundle(t, dir)
	pid := startedResolver(t, tp, dir)
	// Everything below (marking, learning, answering, reloading) runs
	// with CAP_NET_ADMIN alone.
	onlyNetAdmin(t, pid)

	tp.mustReject("listed address before resolution", tp.tcp(allowV4, appPort))
	m, err := tp.query("127.0.0.1", nameListed, dns.TypeA, "udp")
	if err != nil || m.Rcode != dns.RcodeSuccess || strings.Join(answerAddrs(m), ",") != allowV4 {
		t.Fatalf("listed A: %v %v", m, err)
	}
	if m, err := tp.query("127.0.0.1", nameListed, dns.TypeAAAA, "tcp"); err != nil || strings.Join(answerAddrs(m), ",") != allowV6 {
		t.Fatalf("listed AAAA over TCP: %v %v", m, err)
	}
	set := learned(t, tp)
	for _, a := range []string{allowV4, allowV6} {
		// TTL 60 raised to the 5-minute floor.
		if !strings.Contains(set, a+" timeout 5m expires") {
			t.Errorf("learned %s should carry the clamped 5m timeout:\n%s", a, set)
		}
	}
	tp.mustReach("listed address after resolution", tp.tcp(allowV4, appPort))

	// Unlisted names, TXT of a listed name, a tunnel-shaped name: answered
	// locally, zero queries upstream.
	before := up.total()
	tunnel := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + ".t.evil.test"
	for _, c := range []struct {
		name  string
		qtype uint16
		rcode int
	}{
		{"blocked.shield.test", dns.TypeA, dns.RcodeRefused},
		{tunnel, dns.TypeTXT, dns.RcodeRefused},
		{"allowed.shield.test.evil.test", dns.TypeA, dns.RcodeRefused},
		{nameListed, dns.TypeTXT, dns.RcodeSuccess},
		{"x." + nameListed, dns.TypeNULL, dns.RcodeSuccess},
	} {
		m, err := tp.query("127.0.0.1", c.name, c.qtype, "udp")
		if err != nil || m.Rcode != c.rcode || len(m.Answer) != 0 {
			t.Errorf("%s %s: %v %v, want %s and no answer", c.name, dns.TypeToString[c.qtype], m, err, dns.RcodeToString[c.rcode])
		}
		if n := up.count(c.name, c.qtype); n != 0 {
			t.Errorf("%s %s reached the upstream %d times", c.name, dns.TypeToString[c.qtype], n)
		}
	}
	if n := up.total() - before; n != 0 {
		t.Errorf("refused queries caused %d upstream queries", n)
	}
	if log := readFile(t, filepath.Join(dir, shieldbundle.FileDNSLog)); !strings.Contains(log, "blocked.shield.test") {
		t.Errorf("refused name not in dns.log:\n%s", log)
	}

	// Rebinding: the answer is passed on, nothing of it is learned.
	m, err = tp.query("127.0.0.1", nameRebind, dns.TypeA, "udp")
	if err != nil || len(answerAddrs(m)) != 3 {
		t.Fatalf("rebinding A: %v %v", m, err)
	}
	if _, err := tp.query("127.0.0.1", nameRebind, dns.TypeAAAA, "udp"); err != nil {
		t.Fatal(err)
	}
	set = learned(t, tp)
	for _, a := range []string{"10.0.2.2", "169.254.169.254", "127.0.0.1", "::1", "fd00::2"} {
		if strings.Contains(set, " "+a+" ") || strings.Contains(set, "{ "+a) {
			t.Errorf("special address %s was learned:\n%s", a, set)
		}
	}

	// Rebinding to an address of the host itself (not special: a public
	// uplink address, a veth end): passed on, not learned.
	if up.hostSelf.IsValid() {
		m, err = tp.query("127.0.0.1", nameSelf, dns.TypeA, "udp")
		if err != nil || strings.Join(answerAddrs(m), ",") != up.hostSelf.String() {
			t.Fatalf("%s: %v %v", nameSelf, m, err)
		}
		if set := learned(t, tp); strings.Contains(set, " "+up.hostSelf.String()+" ") || strings.Contains(set, "{ "+up.hostSelf.String()+" ") {
			t.Errorf("the host's own address %s was learned:\n%s", up.hostSelf, set)
		}
	} else {
		t.Log("the host namespace has no address outside the special ranges: host-address case not run")
	}

	// CNAME chain: the target's address is learned and the target name is
	// admitted for the answer's TTL.
	m, err = tp.query("127.0.0.1", nameCNAME, dns.TypeA, "udp")
	if err != nil || strings.Join(answerAddrs(m), ",") != otherV4 || len(m.Answer) != 2 {
		t.Fatalf("CNAME chain: %v %v", m, err)
	}
	if !strings.Contains(learned(t, tp), otherV4+" timeout 10m expires") {
		t.Errorf("CNAME target address not learned with the chain's TTL:\n%s", learned(t, tp))
	}
	if m, err := tp.query("127.0.0.1", nameTarget, dns.TypeA, "udp"); err != nil || m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
		t.Errorf("CNAME target not admitted: %v %v", m, err)
	}

	// The table replaced underneath (`shield up`/`down` swap it, a hook
	// re-run rebuilds it): the resolver notices and puts back the
	// addresses it still vouches for, so connections and cached answers
	// keep working.
	script := readFile(t, filepath.Join(dir, shieldbundle.FileRuleset))
	if out, err := tp.nftStdin(string(hook.Transaction([]byte(script), nil)), "-f", "-"); err != nil {
		t.Fatalf("replace the table: %v %s", err, out)
	}
	restored := false
	for i := 0; i < 100 && !restored; i++ {
		set := learned(t, tp)
		restored = strings.Contains(set, allowV4+" timeout") && strings.Contains(set, otherV4+" timeout")
		if !restored {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if !restored {
		t.Errorf("learned addresses not restored into the replaced table:\n%s", learned(t, tp))
	}
	if m, err := tp.query("127.0.0.1", nameListed, dns.TypeA, "udp"); err != nil || strings.Join(answerAddrs(m), ",") != allowV4 {
		t.Fatalf("listed A after the table was replaced: %v %v", m, err)
	}
	tp.mustReach("listed address after the table was replaced", tp.tcp(allowV4, appPort))

	// A truncated upstream answer is fetched again over TCP; the client
	// gets a truncated UDP reply and the whole answer over TCP.
	m, err = tp.query("127.0.0.1", nameBig, dns.TypeA, "tcp")
	if err != nil || len(answerAddrs(m)) != bigAddresses {
		t.Fatalf("big answer over TCP: %d addresses, %v", len(answerAddrs(m)), err)
	}
	if up.tcp == 0 {
		t.Error("the upstream saw no TCP query for the truncated answer")
	}
	if !strings.Contains(learned(t, tp), "203.0.113.199 timeout") {
		t.Error("addresses of the TCP answer not learned")
	}

	// An ordinary socket of the container reaches no upstream: the
	// unmarked query is rejected and the upstream never sees it.
	before = up.count(nameListed, dns.TypeA)
	if m, err := tp.query(dnsV4, nameListed, dns.TypeA, "udp"); err == nil {
		t.Errorf("unmarked UDP query reached the upstream: %v", m)
	}
	if m, err := tp.query(dnsV4, nameListed, dns.TypeA, "tcp"); err == nil {
		t.Errorf("unmarked TCP query reached the upstream: %v", m)
	}
	if n := up.count(nameListed, dns.TypeA) - before; n != 0 {
		t.Errorf("unmarked queries reached the upstream %d times", n)
	}

	// SIGHUP with a new live.domains entry makes it resolvable.
	if m, err := tp.query("127.0.0.1", nameLater, dns.TypeA, "udp"); err != nil || m.Rcode != dns.RcodeRefused {
		t.Fatalf("%s before reload: %v %v", nameLater, m, err)
	}
	writeFile(t, dir, shieldbundle.FileLiveDomains, nameLater+"\n")
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	ok := false
	for i := 0; i < 100 && !ok; i++ {
		m, err := tp.query("127.0.0.1", nameLater, dns.TypeA, "udp")
		ok = err == nil && m.Rcode == dns.RcodeSuccess && strings.Join(answerAddrs(m), ",") == laterV4
		if !ok {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if !ok {
		t.Fatalf("%s not resolvable after SIGHUP", nameLater)
	}
	// Denying the profile's domain drops its learned addresses.
	writeFile(t, dir, shieldbundle.FileDeniedDomains, nameListed+"\n")
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	gone := false
	for i := 0; i < 100 && !gone; i++ {
		gone = !strings.Contains(learned(t, tp), allowV4+" ")
		if !gone {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if !gone {
		t.Errorf("learned address of a denied domain kept:\n%s", learned(t, tp))
	}
	if strings.Contains(learned(t, tp), laterV4+" ") == false {
		t.Errorf("address of a still-listed domain dropped:\n%s", learned(t, tp))
	}

	// A flood of refused names: bounded log, nothing upstream.
	before = up.total()
	err = tp.ctrNS.Do(func() error {
		c, err := net.Dial("udp", "127.0.0.1:53")
		if err != nil {
			return err
		}
		defer c.Close()
		buf := make([]byte, 1500)
		for i := 0; i < 20000; i++ {
			m := new(dns.Msg)
			m.SetQuestion(fmt.Sprintf("flood-%d-%s.evil.test.", i, strings.Repeat("x", 40)), dns.TypeTXT)
			b, _ := m.Pack()
			if _, err := c.Write(b); err != nil {
				return err
			}
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			if _, err := c.Read(buf); err != nil {
				return fmt.Errorf("flood query %d: %w", i, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := up.total() - before; n != 0 {
		t.Errorf("flood caused %d upstream queries", n)
	}
	var logBytes int64
	for _, f := range []string{shieldbundle.FileDNSLog, shieldbundle.FileDNSLog + ".1"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err == nil {
			if fi.Size() > 1<<20 {
				t.Errorf("%s is %d bytes, over the 1 MiB bound", f, fi.Size())
			}
			logBytes += fi.Size()
		}
	}
	t.Logf("after a 20,000-query flood: dns.log(+.1) = %d bytes", logBytes)

	// poststop stops it and removes resolver.pid.
	if r := runHook(t, "poststop", ociState(tp.pid, dir, resolverVer)); r.code != 0 {
		t.Fatalf("poststop: %+v", r)
	}
	if !exitsWithin(t, pid, time.Second) {
		t.Fatal("resolver still running after poststop")
	}
	if _, err := os.Stat(filepath.Join(dir, shieldbundle.FileResolverPID)); err == nil {
		t.Error("resolver.pid left after poststop")
	}
}

// TestResolverEndsWithContainer: the resolver exits when the container's
// init does, without poststop (a failed start that never got one).
func TestResolverEndsWithContainer(t *testing.T) {
	tp := newTopo(t)
	startTestUpstream(t, tp)
	dir := stateDir(t)
	resolverBundle(t, dir)
	pid := startedResolver(t, tp, dir)
	start := time.Now()
	if err := syscall.Kill(tp.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !exitsWithin(t, pid, time.Second) {
		t.Fatal("resolver still running a second after the container's init exited")
	}
	t.Logf("resolver exited %s after the container's init was killed", time.Since(start).Round(time.Microsecond))
}

// TestResolverStartFailure: a resolver that cannot start fails the hook,
// saying why, and leaves nothing running.
func TestResolverStartFailure(t *testing.T) {
	tp := newTopo(t)
	dir := stateDir(t)
	resolverBundle(t, dir)
	if err := os.Remove(filepath.Join(dir, shieldbundle.FileUpstreamDNS)); err != nil {
		t.Fatal(err)
	}
	r := runHook(t, "createRuntime", ociState(tp.pid, dir, resolverVer))
	if r.code == 0 || !strings.Contains(r.stderr, "start resolver") || !strings.Contains(r.stderr, "upstream.dns") {
		t.Fatalf("%+v", r)
	}
	if _, ok := shieldbundle.ResolverPID(dir); ok {
		t.Fatal("resolver left running")
	}
}

// TestResolverLateStartFailure: a failure the hook cannot see before the
// fork (here dns.log is a directory) does not fail the hook, which no
// longer waits; the resolver records why in resolver.ready and exits, and
// the runner's verification fails the start on that line.
func TestResolverLateStartFailure(t *testing.T) {
	tp := newTopo(t)
	dir := stateDir(t)
	resolverBundle(t, dir)
	if err := os.Mkdir(filepath.Join(dir, shieldbundle.FileDNSLog), 0o700); err != nil {
		t.Fatal(err)
	}
	r := runHook(t, "createRuntime", ociState(tp.pid, dir, resolverVer))
	if r.code != 0 {
		t.Fatalf("%+v", r)
	}
	if line := resolverReport(t, dir); !strings.HasPrefix(line, "error: ") || !strings.Contains(line, shieldbundle.FileDNSLog) {
		t.Fatalf("resolver.ready: %q", line)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, ok := shieldbundle.ResolverPID(dir); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("resolver still running after reporting its failure")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestResolverStoppedWhenRulesetFails: the resolver starts while the
// ruleset is applied; when the ruleset fails, the hook fails and no
// resolver is left running.
func TestResolverStoppedWhenRulesetFails(t *testing.T) {
	tp := newTopo(t)
	dir := stateDir(t)
	resolverBundle(t, dir)
	good := readFile(t, filepath.Join(dir, shieldbundle.FileRuleset))
	writeFile(t, dir, shieldbundle.FileRuleset, good+"add element inet terok_shield allow_v4 { 1.2.3.4; flush ruleset }\n")
	r := runHook(t, "createRuntime", ociState(tp.pid, dir, resolverVer))
	if r.code == 0 || !strings.Contains(r.stderr, "apply ruleset") {
		t.Fatalf("%+v", r)
	}
	if pid, ok := shieldbundle.ResolverPID(dir); ok {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		t.Fatalf("resolver %d still running after the hook failed", pid)
	}
	// Nothing of ours in the container netns either: port 53 is free.
	if err := tp.ctrNS.Do(func() error {
		l, err := net.ListenPacket("udp", "127.0.0.1:53")
		if err == nil {
			_ = l.Close()
		}
		return err
	}); err != nil {
		t.Fatalf("127.0.0.1:53 still taken in the container netns: %v", err)
	}
}

// TestPoststopSparesForeignResolverPID: a resolver.pid naming some other
// process (PID reuse, or a planted file) gets nothing signalled, and the
// stale file is removed.
func TestPoststopSparesForeignResolverPID(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	dir := stateDir(t)
	victim := exec.Command("sleep", "60")
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = victim.Process.Kill(); _ = victim.Wait() }()
	writeFile(t, dir, shieldbundle.FileResolverPID, strconv.Itoa(victim.Process.Pid)+"\n")
	if r := runHook(t, "poststop", ociState(0, dir, resolverVer)); r.code != 0 {
		t.Fatalf("poststop: %+v", r)
	}
	if exitsWithin(t, victim.Process.Pid, 100*time.Millisecond) {
		t.Fatal("foreign process was signalled")
	}
	if _, err := os.Stat(filepath.Join(dir, shieldbundle.FileResolverPID)); err == nil {
		t.Fatal("stale resolver.pid kept")
	}
}

// TestResolverRootless starts the resolver the way rootless podman runs
// the hook: as uid 0 of a user namespace that owns the container's network
// namespace. Marking its upstream sockets, binding port 53 and updating
// the learned sets all work with that namespace's capabilities alone.
func TestResolverRootless(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	ctr := rootlessContainer(t)
	pid := strconv.Itoa(ctr.Process.Pid)
	// The outside: a peer netns holding the gateway and the upstream.
	peer := fmt.Sprintf("hkr%d", os.Getpid()%100000)
	sh(t, "ip", "netns", "add", peer)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", peer).Run() })
	sh(t, "ip", "link", "add", "r0", "netns", pid, "type", "veth", "peer", "name", "r1", "netns", peer)
	in := []string{"nsenter", "-t", pid, "-n", "--"}
	out := []string{"ip", "netns", "exec", peer}
	for _, c := range [][]string{
		append(in, "ip", "link", "set", "lo", "up"),
		append(in, "ip", "addr", "add", ctrV4+"/24", "dev", "r0"),
		append(in, "ip", "link", "set", "r0", "up"),
		append(in, "ip", "route", "add", "default", "via", gwV4),
		append(out, "ip", "link", "set", "lo", "up"),
		append(out, "ip", "addr", "add", gwV4+"/24", "dev", "r1"),
		append(out, "ip", "link", "set", "r1", "up"),
		append(out, "ip", "addr", "add", dnsV4+"/32", "dev", "lo"),
	} {
		sh(t, c...)
	}
	if r := sh(t, append(in, "ip", "route", "get", dnsV4)...); !strings.Contains(r, "dev r0") {
		t.Fatalf("route to the test upstream does not use the test veth: %s", r)
	}
	tp := &topo{t: t}
	var err error
	if tp.outNS, err = nsexec.FromPath("/run/netns/" + peer); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tp.outNS.Close() })
	if tp.ctrNS, err = nsexec.FromPID(ctr.Process.Pid); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tp.ctrNS.Close() })
	up := startTestUpstream(t, tp)

	dir := stateDir(t)
	resolverBundle(t, dir)
	cmd := exec.Command("nsenter", "--user", "-t", pid, "--", hookBin, "createRuntime")
	cmd.Stdin = strings.NewReader(string(ociState(ctr.Process.Pid, dir, resolverVer)))
	var se strings.Builder
	cmd.Stderr = &se
	if err := cmd.Run(); err != nil {
		t.Fatalf("hook: %v: %s %s", err, se.String(), readFile(t, filepath.Join(dir, shieldbundle.FileHookErrorLog)))
	}
	rpid, ok := shieldbundle.ResolverPID(dir)
	if !ok {
		t.Fatal("resolver.pid does not name our resolver")
	}
	t.Cleanup(func() { _ = syscall.Kill(rpid, syscall.SIGKILL) })
	if line := resolverReport(t, dir); line != shieldbundle.ResolverReadyOK {
		t.Fatalf("resolver.ready: %q", line)
	}
	onlyNetAdmin(t, rpid)
	if m, err := tp.query("127.0.0.1", nameListed, dns.TypeA, "udp"); err != nil || strings.Join(answerAddrs(m), ",") != allowV4 {
		t.Fatalf("listed A through the rootless resolver: %v %v", m, err)
	}
	if set := sh(t, append(in, "nft", "list", "set", "inet", ruleset.Table, ruleset.SetDNSV4)...); !strings.Contains(set, allowV4+" timeout") {
		t.Errorf("address not learned:\n%s", set)
	}
	if m, err := tp.query("127.0.0.1", "blocked.shield.test", dns.TypeA, "udp"); err != nil || m.Rcode != dns.RcodeRefused || up.count("blocked.shield.test", dns.TypeA) != 0 {
		t.Errorf("unlisted name: %v %v", m, err)
	}
	// Refused traffic is on record rootless too: the NFLOG bind works
	// with the user namespace's CAP_NET_ADMIN alone.
	tp.mustReject("not allowlisted, rootless", tp.tcp(otherV4, appPort))
	waitRecord(t, dir, "rootless tcp", isRefused(otherV4, "tcp", fmt.Sprint(appPort)))
	waitRecord(t, dir, "rootless dns", func(r audit.Record) bool {
		return r.Event == "dns-refused" && field(r, "name") == "blocked.shield.test"
	})
	if err := ctr.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if !exitsWithin(t, rpid, time.Second) {
		t.Fatal("rootless resolver outlived the container's init")
	}
}
