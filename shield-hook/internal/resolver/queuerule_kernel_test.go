package resolver

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/shield-hook/internal/nftnl"
	"terok.dev/sandbox/shield-hook/internal/nsexec"
)

// The queue-rule topology: a container netns whose only route leads over
// a veth to an outside netns that holds the test host.
const (
	qrCtrAddr = "203.0.113.2"
	qrGwAddr  = "203.0.113.1"
	qrHost    = "198.51.100.77" // unlisted, public (documentation range)
	qrAllowed = "198.51.100.78" // on the allowlist
	qrCtrV6   = "2001:db8:7::2"
	qrGwV6    = "2001:db8:7::1"
	qrHostV6  = "2001:db8:77::77" // unlisted, public (documentation range)
	qrPort    = 8080
)

type queueRuleNS struct {
	ctr, out string
	ns       *nsexec.NS
	accepted atomic.Int64 // connections the outside host accepted
	plan     *nftnl.Plan
}

func newQueueRuleNS(t *testing.T) *queueRuleNS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces (CI runs as root)")
	}
	k := &queueRuleNS{ctr: fmt.Sprintf("hkqr-c-%d", os.Getpid()), out: fmt.Sprintf("hkqr-o-%d", os.Getpid())}
	vc, vo := fmt.Sprintf("qrc%d", os.Getpid()%100000), fmt.Sprintf("qro%d", os.Getpid()%100000)
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
		return string(out)
	}
	for _, n := range []string{k.ctr, k.out} {
		run("ip", "netns", "add", n)
		n := n
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", n).Run() })
	}
	run("ip", "link", "add", vc, "netns", k.ctr, "type", "veth", "peer", "name", vo, "netns", k.out)
	c, o := []string{"ip", "netns", "exec", k.ctr}, []string{"ip", "netns", "exec", k.out}
	run(append(c, "ip", "link", "set", "lo", "up")...)
	run(append(c, "ip", "addr", "add", qrCtrAddr+"/24", "dev", vc)...)
	run(append(c, "ip", "link", "set", vc, "up")...)
	run(append(c, "ip", "route", "add", "default", "via", qrGwAddr)...)
	run(append(c, "ip", "addr", "add", qrCtrV6+"/64", "dev", vc, "nodad")...)
	run(append(c, "ip", "-6", "route", "add", "default", "via", qrGwV6)...)
	run(append(o, "ip", "link", "set", "lo", "up")...)
	run(append(o, "ip", "addr", "add", qrGwAddr+"/24", "dev", vo)...)
	run(append(o, "ip", "addr", "add", qrHost+"/32", "dev", "lo")...)
	run(append(o, "ip", "addr", "add", qrAllowed+"/32", "dev", "lo")...)
	run(append(o, "ip", "addr", "add", qrGwV6+"/64", "dev", vo, "nodad")...)
	run(append(o, "ip", "addr", "add", qrHostV6+"/128", "dev", "lo")...)
	run(append(o, "ip", "link", "set", vo, "up")...)
	// The test host is reached through our veth, nothing else.
	for _, a := range []string{qrHost, qrAllowed, qrHostV6} {
		if r := run(append(c, "ip", "route", "get", a)...); !strings.Contains(r, "dev "+vc+" ") {
			t.Fatalf("route to %s does not use the test veth %s: %s", a, vc, r)
		}
	}
	var err error
	if k.ns, err = nsexec.FromPath("/run/netns/" + k.ctr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.ns.Close() })
	outNS, err := nsexec.FromPath("/run/netns/" + k.out)
	if err != nil {
		t.Fatal(err)
	}
	defer outNS.Close()
	var ln net.Listener
	if err := outNS.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", fmt.Sprintf(":%d", qrPort)) // both families
		return err
	}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			k.accepted.Add(1)
			_, _ = conn.Write([]byte("ok\n"))
			_ = conn.Close()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); <-done })

	// The interactive table, by the hook's own builder, as createRuntime
	// applies it.
	text, _, err := ruleset.Script{Options: ruleset.Options{DNS: "198.51.100.53", Interactive: true},
		Allow: []string{qrAllowed}, Gateways: []string{qrGwAddr}}.Render()
	if err != nil {
		t.Fatal(err)
	}
	s, ok := ruleset.ParseScript(text)
	if !ok {
		t.Fatal("interactive script not parsed")
	}
	if k.plan, err = nftnl.NewPlan(s, nil); err != nil {
		t.Fatal(err)
	}
	conn, sndbuf, closeFn, err := nftnl.OpenIn(k.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	if err := k.plan.Apply(conn, sndbuf); err != nil {
		t.Fatal(err)
	}
	if verrs, err := k.plan.Verify(conn); err != nil || len(verrs) > 0 {
		t.Fatalf("read-back: %v %v", err, verrs)
	}
	listing, err := exec.Command("ip", "netns", "exec", k.ctr, "nft", "list", "table", "inet", ruleset.Table).Output()
	if err != nil {
		t.Fatal(err)
	}
	if errs := ruleset.VerifyHook(string(listing), true); len(errs) > 0 {
		t.Fatalf("listing fails VerifyHook: %v\n%s", errs, listing)
	}
	t.Logf("queue rules applied as %s", k.plan.Queue())
	return k
}

// dial connects from the container netns to addr:qrPort within wait and
// reads the host's line: nil means the connection went through.
func (k *queueRuleNS) dial(addr string, wait time.Duration) error {
	return k.ns.Do(func() error {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, strconv.Itoa(qrPort)), wait)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(wait))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err == nil && line != "ok\n" {
			err = fmt.Errorf("unexpected reply %q", line)
		}
		return err
	})
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// dialMarked is dial from a socket carrying mark (SO_MARK, which the
// test may set as root: a container process may not, see
// TestContainerCannotMark).
func (k *queueRuleNS) dialMarked(addr string, mark uint32, wait time.Duration) error {
	return k.ns.Do(func() error {
		d := net.Dialer{Timeout: wait, Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
			}); err != nil {
				return err
			}
			return serr
		}}
		c, err := d.Dial("tcp", net.JoinHostPort(addr, strconv.Itoa(qrPort)))
		if err == nil {
			_ = c.Close()
		}
		return err
	})
}

// refusedAtOnce: a refused connect fails with the reset of the
// refused-mark reject, not by running into its timeout (a dropped SYN
// would leave the dial to time out instead, whatever the wait).
func refusedAtOnce(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("%s: %v, want ECONNREFUSED at once", what, err)
	}
}

// TestQueueRuleKernel: the interactive table from the hook's netlink
// builder (native queue expression, or the xt NFQUEUE fallback on a
// kernel without nft_queue), the resolver's real approver holding queue
// 100 and a decider on its socket, a TCP connect to a test host in a
// second netns: nothing held goes through while nobody holds the queue
// (no bypass), allow-once lets exactly that connection through, a
// refusal (no decider, the decider's, the timeout) fails the connect at
// once with ECONNREFUSED (the refused packet handed back marked meets the
// refused-mark rejects), a packet that carries the mark from its socket
// is rejected before anything else (never queued, never accepted, not
// even to an allowlisted host), and an allowlisted destination is never
// asked about.
func TestQueueRuleKernel(t *testing.T) {
	k := newQueueRuleNS(t)

	// Nobody holds the queue yet: the SYN is dropped, the host sees nothing.
	if err := k.dial(qrHost, time.Second); err == nil || !isTimeout(err) {
		t.Fatalf("connect with the queue not held: %v, want a timeout", err)
	}
	if err := k.dial(qrAllowed, 5*time.Second); err != nil {
		t.Fatalf("allowlisted destination: %v", err)
	}
	if n := k.accepted.Load(); n != 1 {
		t.Fatalf("host accepted %d connections, want 1 (the allowlisted one)", n)
	}

	f, _ := testRefusals(t)
	if err := os.WriteFile(filepath.Join(f.dir, shieldbundle.FileDecideTimeout), []byte("2s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.remember("host.example.test", []netip.Addr{netip.MustParseAddr(qrHost)})
	qk := &approveNS{dir: f.dir, f: f, attached: make(chan struct{}, 4)}
	var ap *approver
	if err := k.ns.Do(func() error {
		var err error
		ap, err = openApprover(f.dir, f, func(err error) { t.Errorf("approver: %v", err) }, qk.logf)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			ap.stop()
		}
	})

	// No decider attached: refused at once, on record. (The time is
	// logged for the docs, not asserted.)
	began := time.Now()
	refusedAtOnce(t, "connect without a decider", k.dial(qrHost, 10*time.Second))
	t.Logf("no-decider refusal: the connect failed after %v", time.Since(began))
	// IPv6 too: the reset ends the connect at once (an ICMPv6 error would
	// only be a soft error for the first SYN, docs/shield-hook.md).
	refusedAtOnce(t, "IPv6 connect without a decider", k.dial(qrHostV6, 10*time.Second))
	qk.record(t, shieldbundle.VerdictRefuse, "no-decider")

	d := qk.attach(t)
	// Allow once.
	res := make(chan error, 1)
	go func() { res <- k.dial(qrHost, 10*time.Second) }()
	q := d.Question(t)
	if q.Proto != "tcp" || q.Dst != qrHost || q.Port != qrPort || q.Name != "host.example.test" {
		t.Fatalf("question %+v", q)
	}
	d.Answer(t, q.ID, shieldbundle.VerdictOnce)
	if err := <-res; err != nil {
		t.Fatalf("allowed once: %v", err)
	}
	qk.record(t, shieldbundle.VerdictOnce, "decided")
	if n := k.accepted.Load(); n != 2 {
		t.Fatalf("host accepted %d connections, want 2", n)
	}

	// Refused by the decider: one question, the connect fails at once.
	go func() { res <- k.dial(qrHost, 10*time.Second) }()
	q = d.Question(t)
	began = time.Now()
	d.Answer(t, q.ID, shieldbundle.VerdictRefuse)
	refusedAtOnce(t, "refused connect", <-res)
	t.Logf("decider refusal: the connect failed %v after the answer", time.Since(began))
	go func() { res <- k.dial(qrHostV6, 10*time.Second) }()
	if q = d.Question(t); q.Dst != qrHostV6 || q.Proto != "tcp" {
		t.Fatalf("IPv6 question %+v", q)
	}
	d.Answer(t, q.ID, shieldbundle.VerdictRefuse)
	refusedAtOnce(t, "refused IPv6 connect", <-res)
	qk.record(t, shieldbundle.VerdictRefuse, "decided")

	// No answer within the timeout (2 s): refused, the connect fails then.
	go func() { res <- k.dial(qrHost, 20*time.Second) }()
	d.Question(t)
	refusedAtOnce(t, "timed-out connect", <-res)
	qk.record(t, shieldbundle.VerdictRefuse, "timeout")

	// A socket carrying the mark itself is rejected by the chain's first
	// rules: not asked about, not queued, not even the allowlisted host
	// reached (the mark skips nothing and opens nothing).
	refusedAtOnce(t, "marked connect to the allowlisted host", k.dialMarked(qrAllowed, ruleset.RefusedMark, 10*time.Second))
	refusedAtOnce(t, "marked connect to an unlisted host", k.dialMarked(qrHost, ruleset.RefusedMark, 10*time.Second))
	d.NoQuestion(t, 300*time.Millisecond, "a marked connection was asked about")
	if n := k.accepted.Load(); n != 2 {
		t.Fatalf("host accepted %d connections after the refusals, want 2", n)
	}
	if n := ap.returned.Load(); n != 0 {
		t.Fatalf("%d refused packets came back to the queue past the refused-mark rejects", n)
	}

	// The holder gone (the resolver stopped): dropped again, no bypass.
	ap.stop()
	stopped = true
	if err := k.dial(qrHost, time.Second); err == nil || !isTimeout(err) {
		t.Fatalf("connect after the holder closed the queue: %v, want a timeout", err)
	}
	if n := k.accepted.Load(); n != 2 {
		t.Fatalf("host accepted %d connections, want 2", n)
	}
}

// TestContainerCannotMark: setting SO_MARK (the refused mark, or the
// resolver's) needs CAP_NET_ADMIN, or since Linux 5.17 CAP_NET_RAW, over
// the netns; a root process with neither in its bounding set, as every
// process of a container runs (podman's default capabilities leave both
// out), gets EPERM. The helper runs as the test binary under setpriv.
func TestContainerCannotMark(t *testing.T) {
	if os.Getenv("TEROK_SOMARK_HELPER") != "" {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		if err != nil {
			fmt.Println("socket:", err)
			os.Exit(3)
		}
		for _, m := range []uint32{ruleset.RefusedMark, ruleset.ResolverMark} {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(m)); err != nil {
				fmt.Printf("%#x:%s ", m, unix.ErrnoName(err.(syscall.Errno)))
			} else {
				fmt.Printf("%#x:ok ", m)
			}
		}
		os.Exit(0)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (CI runs as root)")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv missing")
	}
	run := func(bounding string) string {
		t.Helper()
		cmd := exec.Command("setpriv", "--bounding-set="+bounding, "--inh-caps=-all", "--",
			os.Args[0], "-test.run=^TestContainerCannotMark$")
		cmd.Env = append(os.Environ(), "TEROK_SOMARK_HELPER=1")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("helper: %v: %s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	want := fmt.Sprintf("%#x:EPERM %#x:EPERM", ruleset.RefusedMark, ruleset.ResolverMark)
	if got := run("-net_admin,-net_raw"); got != want {
		t.Fatalf("root without CAP_NET_ADMIN and CAP_NET_RAW: %s, want %s", got, want)
	}
	if got := run("-net_admin"); !strings.Contains(got, "EPERM") {
		t.Logf("root with CAP_NET_RAW alone may set a mark on this kernel: %s (the container must lack both)", got)
	}
	if got := run("+all"); strings.Contains(got, "EPERM") {
		t.Fatalf("the helper as full root: %s, want it allowed (else the test proves nothing)", got)
	}
}
