//go:build e2e

package e2e

// Interactive mode end to end (docs/shield.md, Interactive decider
// protocol; docs/shield-resolver.md, Interactive approval): real podman,
// rootful and rootless, the real hook and resolver holding the kernel's
// queue, `terok-sandbox run --shield-mode interactive` and the real
// `terok-sandbox shield interactive CONTAINER --json` as the decider,
// driven over its stdin and stdout. The destinations are test hosts in a
// network namespace of this test's own (198.51.100.x, routes checked),
// whose DNS server is the shield's upstream; the test host writes down
// every connection it accepts, by local address, so "never let through"
// is counted where it would show, not inferred from the container.
//
// No case can pass without the queue: each one first sees its question
// (destination, port, name) while the container's connect is still
// pending and the test host has not seen it, and only then answers.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/common/testkit"
	"terok.dev/sandbox/runner/internal/testharness"
)

const (
	iaReply  = "interactive-outside-ok"
	iaDomain = "once.ia-e2e.example"
	// iaTimeout is the shortened decision timeout (shield_decide_timeout,
	// docs/config.md).
	iaTimeout   = "2s"
	iaTimeoutMS = 2000
	// iaAsk bounds the wait for a question: the container's connect,
	// through podman exec, on a loaded 2-core VM.
	iaAsk = 30 * time.Second
)

func TestShieldInteractive(t *testing.T) {
	env := H(t)
	out, _, addrs := shxNewNetnsHost(t, 6)
	dnsIP := addrs[0]
	dst := map[string]string{"once": addrs[1], "always": addrs[2], "refuse": addrs[3], "timeout": addrs[4], "killed": addrs[5]}
	accepted := filepath.Join(t.TempDir(), "accepted")
	// One line per accepted connection: the local address it came to.
	out.daemon(t, "socat", "TCP-LISTEN:"+shxOutsidePort+",reuseaddr,fork", "SYSTEM:echo "+iaReply+"; echo $SOCAT_SOCKADDR >> "+accepted)
	out.daemon(t, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
		"--listen-address="+dnsIP, "--bind-interfaces", "--port=53", "--pid-file=",
		"--address=/"+iaDomain+"/"+dst["once"])
	shxWaitFor(t, 10*time.Second, "outside DNS server", func() bool {
		b, err := exec.Command("dig", "+short", "+time=1", "+tries=1", "@"+dnsIP, iaDomain).Output()
		return err == nil && strings.TrimSpace(string(b)) == dst["once"]
	})
	// The readiness probe of the TCP server is itself an accepted
	// connection (to dnsIP, which no case uses).
	shxWaitFor(t, 10*time.Second, "outside TCP server", func() bool {
		c, err := net.DialTimeout("tcp", dnsIP+":"+shxOutsidePort, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	accepts := func(addr string) int {
		data, _ := os.ReadFile(accepted)
		n := 0
		for _, l := range strings.Split(string(data), "\n") {
			if strings.TrimSpace(l) == addr {
				n++
			}
		}
		return n
	}

	env.Each(t, func(t *testing.T, r *testharness.Runner) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		// The test host serves both runners: count this runner's
		// connections only.
		base := map[string]int{}
		for _, a := range dst {
			base[a] = accepts(a)
		}
		conns := func(addr string) int { return accepts(addr) - base[addr] }
		shxShieldRunner(t, ctx, r)
		gate := shxNewHostService(t)
		shxProfileConfig(t, r, gate.port, "ia", "listed.ia-e2e.example\n")
		if err := r.WriteConfig(fmt.Sprintf("gate_port = %d\nproxy_port = %d\nssh_agent_port = %d\nshield_profiles = [\"ia\"]\nshield_upstream_dns = %q\nshield_decide_timeout = %q\n",
			gate.port, testkit.FreePort(t), testkit.FreePort(t), dnsIP, iaTimeout)); err != nil {
			t.Fatal(err)
		}
		name := r.Name("ia")
		start := time.Now()
		shxSandboxOK(t, ctx, r, "run", "--shield-mode", "interactive", "--name", name, "--image", env.Image, "--", "sleep", "600")
		t.Logf("interactive run: %v", time.Since(start).Round(time.Millisecond))
		stateDir := filepath.Join(r.Dirs.State, "tasks", name, "shield")
		if rules := shxSandboxOK(t, ctx, r, "shield", "rules", name); !iaQueues(rules) {
			t.Fatalf("interactive container's ruleset has no queue rule:\n%s", rules)
		}
		if v := strings.TrimSpace(readFileOr(filepath.Join(stateDir, shieldbundle.FileDecideTimeout))); v != iaTimeout {
			t.Fatalf("decide.timeout = %q, want %q", v, iaTimeout)
		}
		ia := &iaEnv{t: t, ctx: ctx, r: r, name: name, stateDir: stateDir, conns: conns}

		ia.step("allow once", func(t *testing.T) {
			d := ia.decider(t)
			before := conns(dst["once"])
			res := ia.connect(iaDomain, 8)
			h := d.next(t, res)
			ia.checkHeld(t, h, dst["once"], iaDomain, res, before)
			d.answer(t, h.ID, shieldbundle.VerdictOnce)
			if got := <-res; got.Code != 0 || !strings.Contains(got.Stdout, iaReply) {
				t.Fatalf("allowed once, the connection failed: %s", got)
			}
			if conns(dst["once"]) != before+1 {
				t.Fatalf("test host accepted %d connections to %s, want %d", conns(dst["once"]), dst["once"], before+1)
			}
			d.settle(t)
			// A second new connection is held again: once is not always.
			res = ia.connect(dst["once"], 4)
			h2 := d.next(t, res)
			if h2.ID <= h.ID {
				t.Fatalf("second question id %d, first %d", h2.ID, h.ID)
			}
			ia.checkHeld(t, h2, dst["once"], iaDomain, res, before+1)
			got, n := d.refuseUntil(t, res, dst["once"], h2)
			iaRefusedAtOnce(t, "second connection after allow once", got)
			if conns(dst["once"]) != before+1 {
				t.Fatalf("test host accepted the refused second connection")
			}
			if n != 1 {
				t.Fatalf("second connection: %d questions; a refused connect ends at once, with no retransmission", n)
			}
			ia.record(t, "decision once", func(m map[string]any) bool {
				return m["event"] == "decision" && m["verdict"] == "once" && m["reason"] == "decided" && m["dst"] == dst["once"] && m["name"] == iaDomain && m["outcome"] == "ok"
			})
			// The unlisted name the task resolved is on record as forwarded.
			ia.record(t, "dns-forwarded "+iaDomain, func(m map[string]any) bool {
				return m["event"] == "dns-forwarded" && m["name"] == iaDomain && m["qtype"] == "A" && m["rcode"] == "NOERROR" && strings.Contains(fmt.Sprint(m["addrs"]), dst["once"])
			})
			d.detach(t)
		})

		ia.step("allow always", func(t *testing.T) {
			d := ia.decider(t)
			before := conns(dst["always"])
			res := ia.connect(dst["always"], 8)
			h := d.next(t, res)
			ia.checkHeld(t, h, dst["always"], "", res, before)
			d.answer(t, h.ID, shieldbundle.VerdictAlways)
			if got := <-res; got.Code != 0 || !strings.Contains(got.Stdout, iaReply) {
				t.Fatalf("allowed always, the connection failed: %s", got)
			}
			d.detach(t)
			// Persisted like shield allow: the live list, the live table, the
			// bundle's ruleset for a restart, the operator's audit record.
			if l := readFileOr(filepath.Join(stateDir, shieldbundle.FileLiveAllowed)); !strings.Contains(l, dst["always"]) {
				t.Fatalf("live.allowed lacks %s: %q", dst["always"], l)
			}
			if rules := shxSandboxOK(t, ctx, r, "shield", "rules", name); !strings.Contains(rules, dst["always"]) {
				t.Fatalf("live ruleset lacks %s:\n%s", dst["always"], rules)
			}
			if rs := readFileOr(filepath.Join(stateDir, shieldbundle.FileRuleset)); !strings.Contains(rs, dst["always"]) {
				t.Fatalf("ruleset.nft lacks %s", dst["always"])
			}
			ia.record(t, "decision always", func(m map[string]any) bool {
				return m["event"] == "decision" && m["verdict"] == "always" && m["reason"] == "decided" && m["dst"] == dst["always"]
			})
			ia.record(t, "action allowed", func(m map[string]any) bool {
				return m["event"] == "action" && m["action"] == "allowed" && m["dest"] == dst["always"]
			})
			// Later connections pass with no decider attached.
			for i := 0; i < 2; i++ {
				if got := <-ia.connect(dst["always"], 8); got.Code != 0 || !strings.Contains(got.Stdout, iaReply) {
					t.Fatalf("connection %d after allow always, no decider: %s", i+2, got)
				}
			}
			if conns(dst["always"]) != before+3 {
				t.Fatalf("test host accepted %d connections to %s, want %d", conns(dst["always"]), dst["always"], before+3)
			}
		})

		ia.step("refuse", func(t *testing.T) {
			d := ia.decider(t)
			res := ia.connect(dst["refuse"], 4)
			h := d.next(t, res)
			ia.checkHeld(t, h, dst["refuse"], "", res, 0)
			got, n := d.refuseUntil(t, res, dst["refuse"], h)
			iaRefusedAtOnce(t, "refused connection", got)
			if c := conns(dst["refuse"]); c != 0 {
				t.Fatalf("test host accepted %d refused connections", c)
			}
			if n != 1 {
				t.Fatalf("refused connection: %d questions; a refused connect ends at once, with no retransmission", n)
			}
			ia.record(t, "decision refuse", func(m map[string]any) bool {
				return m["event"] == "decision" && m["verdict"] == "refuse" && m["reason"] == "decided" && m["dst"] == dst["refuse"] && m["outcome"] == "refused"
			})
			d.detach(t)
		})

		ia.step("timeout", func(t *testing.T) {
			d := ia.decider(t)
			res := ia.connect(dst["timeout"], 5)
			h := d.next(t, res)
			ia.checkHeld(t, h, dst["timeout"], "", res, 0)
			// No answer: the question waits out the 2 s timeout, then the
			// connect is refused at once (no retransmission to ask again).
			n := 1
			var got testharness.Result
		wait:
			for {
				select {
				case got = <-res:
					break wait
				case h2, ok := <-d.held:
					if !ok {
						t.Fatalf("decider exited: %s", d.stderr.String())
					}
					if h2.Dst != dst["timeout"] {
						t.Fatalf("unexpected question %+v", h2)
					}
					n++
				}
			}
			iaRefusedAtOnce(t, "unanswered connection", got)
			if n != 1 {
				t.Fatalf("unanswered connection: %d questions, want 1", n)
			}
			ia.record(t, "decision timeout", func(m map[string]any) bool {
				return m["event"] == "decision" && m["verdict"] == "refuse" && m["reason"] == "timeout" && m["dst"] == dst["timeout"]
			})
			// A late answer is ignored: nothing is held for it any more.
			d.answer(t, h.ID, shieldbundle.VerdictOnce)
			d.settle(t)
			if c := conns(dst["timeout"]); c != 0 {
				t.Fatalf("test host accepted %d connections that timed out", c)
			}
			t.Logf("timed out: %d question(s)", n)
			d.detach(t)
		})

		ia.step("decider killed", func(t *testing.T) {
			d := ia.decider(t)
			res := ia.connect(dst["killed"], 6)
			h := d.next(t, res)
			ia.checkHeld(t, h, dst["killed"], "", res, 0)
			d.kill(t)
			// The held packet, its retransmissions and a new connection made
			// with no decider are all refused: no queue bypass.
			iaRefusedAtOnce(t, "held connection after the decider was killed", <-res)
			iaRefusedAtOnce(t, "new connection with no decider", <-ia.connect(dst["killed"], 8))
			if c := conns(dst["killed"]); c != 0 {
				t.Fatalf("test host accepted %d connections without a decider", c)
			}
			ia.record(t, "decision decider-gone", func(m map[string]any) bool {
				return m["event"] == "decision" && m["verdict"] == "refuse" && m["reason"] == "decider-gone" && m["dst"] == dst["killed"]
			})
			ia.record(t, "decision no-decider", func(m map[string]any) bool {
				return m["event"] == "decision" && m["verdict"] == "refuse" && m["reason"] == "no-decider" && m["dst"] == dst["killed"]
			})
			// A new decider can attach and decide.
			d2 := ia.decider(t)
			res = ia.connect(dst["killed"], 8)
			h2 := d2.next(t, res)
			ia.checkHeld(t, h2, dst["killed"], "", res, 0)
			d2.answer(t, h2.ID, shieldbundle.VerdictOnce)
			if got := <-res; got.Code != 0 || !strings.Contains(got.Stdout, iaReply) {
				t.Fatalf("allowed once by the new decider, the connection failed: %s", got)
			}
			if c := conns(dst["killed"]); c != 1 {
				t.Fatalf("test host accepted %d connections, want 1", c)
			}
			d2.detach(t)
		})

		ia.step("resolver killed", func(t *testing.T) {
			// The queue's holder gone: the kernel drops what it held and
			// every new packet for the queue, since the rule queues
			// without bypass. (Last of this container's cases: its DNS is
			// gone too.)
			pid, err := strconv.Atoi(strings.TrimSpace(readFileOr(filepath.Join(stateDir, shieldbundle.FileResolverPID))))
			if err != nil || !shieldbundle.IsOurResolver(pid, stateDir) {
				t.Fatalf("resolver.pid does not name the container's resolver: %d %v", pid, err)
			}
			d := ia.decider(t)
			res := ia.connect(dst["refuse"], 6)
			h := d.next(t, res)
			ia.checkHeld(t, h, dst["refuse"], "", res, 0)
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			select {
			case <-d.exited:
			case <-time.After(30 * time.Second):
				t.Fatal("decider still running after the resolver was killed")
			}
			if d.err == nil || !strings.Contains(d.stderr.String(), "closed the decider connection") {
				t.Fatalf("decider exit %v after the resolver was killed, want an error:\n%s", d.err, d.stderr.String())
			}
			if got := <-res; got.Code == 0 || strings.Contains(got.Stdout, iaReply) {
				t.Fatalf("held connection went through after the resolver was killed: %s", got)
			}
			for _, a := range []string{dst["refuse"], dst["timeout"]} {
				if got := <-ia.connect(a, 3); got.Code == 0 || strings.Contains(got.Stdout, iaReply) {
					t.Fatalf("connection to %s went through with nobody holding the queue: %s", a, got)
				}
				if c := conns(a); c != 0 {
					t.Fatalf("test host accepted %d connections to %s with nobody holding the queue", c, a)
				}
			}
		})

		ia.step("enforce mode queues nothing", func(t *testing.T) {
			ename := r.Name("ia-enforce")
			shxSandboxOK(t, ctx, r, "run", "--name", ename, "--image", env.Image, "--", "sleep", "600")
			edir := filepath.Join(r.Dirs.State, "tasks", ename, "shield")
			if rules := shxSandboxOK(t, ctx, r, "shield", "rules", ename); iaQueues(rules) {
				t.Fatalf("enforce container's ruleset queues:\n%s", rules)
			}
			if _, err := os.Stat(filepath.Join(edir, shieldbundle.FileDeciderSocket)); err == nil {
				t.Fatal("enforce container has a decider socket")
			}
			res := r.Sandbox(ctx, "shield", "interactive", ename, "--json")
			if res.Code == 0 || !strings.Contains(res.Stderr, "interactive mode") {
				t.Fatalf("decider attached to an enforce container: %s", res)
			}
			// Refused by the table at once (reject: no route to host),
			// not held until a timeout.
			got := shxInContainer(ctx, r, ename, "nc -v -w 8 "+dst["refuse"]+" "+shxOutsidePort+" </dev/null")
			if got.Code == 0 || !strings.Contains(got.Stderr, "No route to host") {
				t.Fatalf("enforce mode: want an immediate reject: %s", got)
			}
			if c := conns(dst["refuse"]); c != 0 {
				t.Fatalf("test host accepted %d connections from the enforce container", c)
			}
			recs := ""
			shxWaitFor(t, 15*time.Second, "refused record of the enforce container", func() bool {
				recs = r.Sandbox(ctx, "shield", "log", "--json", ename).Stdout
				for _, m := range jsonLines(t, recs) {
					if m["event"] == "refused" && m["dst"] == dst["refuse"] && m["reason"] == "not-allowlisted" {
						return true
					}
				}
				return false
			})
			if strings.Contains(recs, `"decision"`) {
				t.Fatalf("enforce container has decision records:\n%s", recs)
			}
		})
	})
}

// iaEnv is one runner's interactive container.
type iaEnv struct {
	t        *testing.T
	ctx      context.Context
	r        *testharness.Runner
	name     string
	stateDir string
	conns    func(addr string) int
}

// step runs one case as a subtest and logs its wall time.
func (ia *iaEnv) step(what string, fn func(t *testing.T)) {
	ia.t.Run(what, func(t *testing.T) {
		start := time.Now()
		fn(t)
		t.Logf("%s %s: %v", ia.r.Kind, what, time.Since(start).Round(time.Millisecond))
	})
}

// connect starts `nc -v -w wait target 8080` in the container (-v: busybox
// nc prints why a connect failed only then); the result
// arrives on the channel when nc ends (the goroutine ends with it).
func (ia *iaEnv) connect(target string, wait int) <-chan testharness.Result {
	ch := make(chan testharness.Result, 1)
	go func() {
		ch <- shxInContainer(ia.ctx, ia.r, ia.name, fmt.Sprintf("nc -v -w %d %s %s </dev/null", wait, target, shxOutsidePort))
	}()
	return ch
}

// iaRefusedAtOnce: a refused connection failed with the refused-mark
// reject's TCP reset ("Connection refused"), not by running into nc's
// own timeout (-w), which prints no such error.
func iaRefusedAtOnce(t *testing.T, what string, got testharness.Result) {
	t.Helper()
	if got.Code == 0 || strings.Contains(got.Stdout, iaReply) {
		t.Fatalf("%s went through: %s", what, got)
	}
	if !strings.Contains(got.Stderr, "Connection refused") {
		t.Fatalf("%s: want an immediate refusal (Connection refused), got %s", what, got)
	}
}

// checkHeld asserts that h is the held connection to addr:8080 (with the
// name the container resolved, or none) and that it is really held: the
// connect has not finished and the test host has not seen it.
func (ia *iaEnv) checkHeld(t *testing.T, h shieldbundle.Held, addr, name string, res <-chan testharness.Result, accepted int) {
	t.Helper()
	if h.Proto != "tcp" || h.Dst != addr || h.Port != 8080 || h.Name != name || h.TimeoutMS != iaTimeoutMS {
		t.Fatalf("held %+v, want tcp %s:8080 name %q timeout_ms %d", h, addr, name, iaTimeoutMS)
	}
	select {
	case got := <-res:
		t.Fatalf("the connection finished before its question was answered: %s", got)
	default:
	}
	if c := ia.conns(addr); c != accepted {
		t.Fatalf("test host accepted %d connections to %s before the answer, want %d", c, addr, accepted)
	}
}

// record waits until `shield log --json` has a record of the container
// that ok accepts (records are written asynchronously).
func (ia *iaEnv) record(t *testing.T, what string, ok func(m map[string]any) bool) {
	t.Helper()
	var log string
	deadline := time.Now().Add(15 * time.Second)
	for {
		log = shxSandboxOK(t, ia.ctx, ia.r, "shield", "log", "--json", ia.name)
		for _, m := range jsonLines(t, log) {
			if ok(m) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("shield log lacks %s:\n%s", what, log)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// decider starts `shield interactive NAME --json` and returns once the
// resolver logged it attached.
func (ia *iaEnv) decider(t *testing.T) *iaDecider {
	t.Helper()
	attached := iaLogCount(ia.stateDir, "decider attached")
	bin, err := ia.r.Env().Bin("terok-sandbox")
	if err != nil {
		t.Fatal(err)
	}
	d := &iaDecider{held: make(chan shieldbundle.Held, 64), exited: make(chan struct{}), stateDir: ia.stateDir}
	d.cmd = ia.r.Command(ia.ctx, bin, "shield", "interactive", ia.name, "--json")
	d.in, err = d.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	d.cmd.Stderr = &d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The reader owns stdout and the process's Wait; it ends when the
	// process does (cleanup kills it if the test did not end it).
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			h, err := shieldbundle.ParseHeld(sc.Bytes())
			if err != nil {
				fmt.Fprintf(&d.stderr, "test: bad question line %q: %v\n", sc.Text(), err)
				continue
			}
			d.held <- h
		}
		_, _ = io.Copy(io.Discard, stdout)
		d.err = d.cmd.Wait()
		close(d.held)
		close(d.exited)
	}()
	t.Cleanup(func() {
		_ = d.cmd.Process.Kill()
		<-d.exited
	})
	shxWaitFor(t, 20*time.Second, "the decider attached", func() bool {
		select {
		case <-d.exited:
			t.Fatalf("decider exited before it attached: %v\n%s", d.err, d.stderr.String())
		default:
		}
		return iaLogCount(ia.stateDir, "decider attached") > attached
	})
	return d
}

// iaDecider is a running `shield interactive --json`.
type iaDecider struct {
	cmd      *exec.Cmd
	in       io.WriteCloser
	held     chan shieldbundle.Held // closed when the process ended
	exited   chan struct{}
	err      error // of Wait, set before exited is closed
	stderr   testkit.Buffer
	stateDir string
}

// next is the next question, asked while the connection res is pending;
// res ending first, or no question within iaAsk, fails the test.
func (d *iaDecider) next(t *testing.T, res <-chan testharness.Result) shieldbundle.Held {
	t.Helper()
	select {
	case h, ok := <-d.held:
		if !ok {
			t.Fatalf("decider exited: %v\n%s", d.err, d.stderr.String())
		}
		return h
	case got := <-res:
		t.Fatalf("the connection ended before the decider was asked: %s", got)
	case <-time.After(iaAsk):
		t.Fatalf("no held connection shown within %v; decider stderr:\n%s", iaAsk, d.stderr.String())
	}
	return shieldbundle.Held{}
}

func (d *iaDecider) answer(t *testing.T, id uint64, verdict string) {
	t.Helper()
	b, err := shieldbundle.MarshalLine(shieldbundle.Decision{ID: id, Verdict: verdict})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.in.Write(b); err != nil {
		t.Fatalf("answer %d %s: %v\n%s", id, verdict, err, d.stderr.String())
	}
}

// refuseUntil answers first, and every further question (the SYN's
// retransmissions, all to addr), with refuse until the connection ends;
// it returns the connection's result and the number of questions.
func (d *iaDecider) refuseUntil(t *testing.T, res <-chan testharness.Result, addr string, first shieldbundle.Held) (testharness.Result, int) {
	t.Helper()
	d.answer(t, first.ID, shieldbundle.VerdictRefuse)
	n := 1
	for {
		select {
		case got := <-res:
			return got, n
		case h, ok := <-d.held:
			if !ok {
				t.Fatalf("decider exited: %v\n%s", d.err, d.stderr.String())
			}
			if h.Dst != addr {
				t.Fatalf("unexpected question %+v", h)
			}
			n++
			d.answer(t, h.ID, shieldbundle.VerdictRefuse)
		}
	}
}

// settle refuses what is still on its way (a retransmitted SYN of a
// connection that was answered late) until no question came for a second.
func (d *iaDecider) settle(t *testing.T) {
	t.Helper()
	for {
		select {
		case h, ok := <-d.held:
			if !ok {
				t.Fatalf("decider exited: %v\n%s", d.err, d.stderr.String())
			}
			t.Logf("late question %+v refused", h)
			d.answer(t, h.ID, shieldbundle.VerdictRefuse)
		case <-time.After(time.Second):
			return
		}
	}
}

// detach ends the input: the decider exits 0 and the resolver logs it
// detached, so the next decider can attach.
func (d *iaDecider) detach(t *testing.T) {
	t.Helper()
	detached := iaLogCount(d.stateDir, "decider detached")
	_ = d.in.Close()
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("decider did not exit at the end of its input")
	}
	if d.err != nil {
		t.Fatalf("decider exit: %v\n%s", d.err, d.stderr.String())
	}
	shxWaitFor(t, 10*time.Second, "the resolver to see the decider detach", func() bool {
		return iaLogCount(d.stateDir, "decider detached") > detached
	})
}

// kill sends SIGKILL (no chance to refuse or detach cleanly).
func (d *iaDecider) kill(t *testing.T) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-d.exited
}

// iaLogCount counts the resolver's dns.log lines with msg (the decider
// server logs each attach and detach there).
func iaLogCount(stateDir, msg string) int {
	n := 0
	for _, f := range []string{shieldbundle.FileDNSLog + ".1", shieldbundle.FileDNSLog} {
		n += strings.Count(readFileOr(filepath.Join(stateDir, f)), "msg=\""+msg+"\"")
	}
	return n
}

// iaQueues reports whether a listed ruleset sends packets to a queue
// (native `queue` or the xt NFQUEUE target).
func iaQueues(rules string) bool {
	return strings.Contains(rules, "queue to ") || strings.Contains(rules, "queue num ") ||
		strings.Contains(rules, "queue flags ") || strings.Contains(rules, "NFQUEUE")
}

func readFileOr(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
