package shield

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
)

func TestParseTarget(t *testing.T) {
	tests := []struct {
		in, addr, domain, err string
	}{
		{"198.51.100.7", "198.51.100.7", "", ""},
		{" 198.51.100.0/24 ", "198.51.100.0/24", "", ""},
		{"198.51.100.7/32", "198.51.100.7", "", ""},
		{"2001:DB8::1", "2001:db8::1", "", ""},
		{"::ffff:198.51.100.7", "198.51.100.7", "", ""},
		{"Example.COM", "", "example.com", ""},
		{"*.example.com", "", "*.example.com", ""},
		{"", "", "", "empty target"},
		{"1.2.3", "", "", "Invalid IP/CIDR"},
		{"1.2.3.4.5", "", "", "Invalid IP/CIDR"},
		{"300.1.1.1", "", "", "Invalid IP/CIDR"},
		{"10.0.0.0/33", "", "", "Invalid IP/CIDR"},
		{"fe80::1%eth0", "", "", "Invalid IP/CIDR"},
		{"1.2.3.4; flush ruleset", "", "", "invalid target"},
		{"com", "", "", "invalid target"},
		{"exa mple.com", "", "", "invalid target"},
		{"example.com\nflush ruleset", "", "", "invalid target"},
	}
	for _, tt := range tests {
		addr, domain, err := ParseTarget(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: err %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || addr != tt.addr || domain != tt.domain {
			t.Errorf("%q: got %q %q %v", tt.in, addr, domain, err)
		}
	}
}

func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{"198.51.100.7", "2001:db8::/32", "example.com", "*.x.io", "1.2.3.4; flush ruleset", "a}b.com", "::ffff:1.2.3.4/120"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		addr, domain, err := ParseTarget(s)
		if err != nil {
			return
		}
		if (addr == "") == (domain == "") {
			t.Fatalf("exactly one of addr/domain expected: %q %q", addr, domain)
		}
		// Whatever is accepted ends up in nft commands: it must render.
		if addr != "" {
			if c, err := ruleset.CanonicalIP(addr); err != nil || c != addr {
				t.Fatalf("non-canonical %q", addr)
			}
			if ruleset.AddElements("allow", []string{addr}, false) == "" {
				t.Fatalf("no element command for %q", addr)
			}
		}
		if strings.ContainsAny(addr+domain, " \t\r\n;{}\"'\\$`#") {
			t.Fatalf("unsafe characters accepted: %q", s)
		}
	})
}

func TestCoveredByAndParseSet(t *testing.T) {
	listing := `table inet terok_shield {
	set allow_v4 {
		type ipv4_addr
		flags interval,timeout
		timeout 30m
		elements = { 1.2.3.4 expires 29m59s988ms, 10.0.0.0/8 timeout 3650d expires 3649d23h59m59s988ms,
			     198.51.100.1 expires 29m59s988ms, 203.0.113.1-203.0.113.9 }
	}
}`
	got := parseSetElements(listing)
	want := []string{"1.2.3.4", "10.0.0.0/8", "198.51.100.1", "203.0.113.1-203.0.113.9"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("elements %q", got)
	}
	for _, tt := range []struct{ addr, want string }{
		{"10.1.2.3", "10.0.0.0/8"}, {"10.2.0.0/16", "10.0.0.0/8"}, {"1.2.3.4", "1.2.3.4"}, {"1.2.3.5", ""},
		{"203.0.113.5", "203.0.113.1-203.0.113.9"}, {"0.0.0.0/0", ""}, {"2001:db8::1", ""},
	} {
		if c := coveredBy(tt.addr, got); c != tt.want {
			t.Errorf("coveredBy(%s) = %q want %q", tt.addr, c, tt.want)
		}
	}
	if parseSetElements("set allow_v6 {\n type ipv6_addr\n}") != nil {
		t.Error("elements from an empty set")
	}
}

// liveNetns is a network namespace with a process in it, standing in for a
// running container: a fake `podman inspect` reports that process's PID,
// everything else (nsenter, nft, the kernel) is real.
type liveNetns struct {
	name string
	pid  int
	bin  string
}

func newLiveNetns(t *testing.T) liveNetns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	for _, tool := range []string{"ip", "nft", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	name := fmt.Sprintf("shxl-%d-%d", os.Getpid(), rand.Intn(1_000_000))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	cmd := exec.Command("ip", "netns", "exec", name, "sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = exec.Command("ip", "netns", "del", name).Run()
	})
	// Wait until the sleeper is inside the namespace.
	self, _ := os.Readlink("/proc/self/ns/net")
	deadline := time.Now().Add(10 * time.Second)
	for {
		ns, err := os.Readlink("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/net")
		if err == nil && ns != self {
			if exe, _ := os.Readlink("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/exe"); strings.HasSuffix(exe, "sleep") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("sleeper did not enter the netns")
		}
		time.Sleep(10 * time.Millisecond)
	}
	bin := t.TempDir()
	fakeBin(t, bin, "podman", fmt.Sprintf("[ \"$1\" = inspect ] && echo %d && exit 0\nexit 125\n", cmd.Process.Pid))
	return liveNetns{name: name, pid: cmd.Process.Pid, bin: bin}
}

func (l liveNetns) nft(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", l.name, "nft"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("nft %v: %v %s", args, err, out)
	}
	return string(out)
}

func TestLiveOperations(t *testing.T) {
	for _, tier := range []string{TierDig, TierDnsmasq} {
		t.Run(tier, func(t *testing.T) { testLiveOperations(t, tier) })
	}
}

func testLiveOperations(t *testing.T, tier string) {
	ctx := context.Background()
	ns := newLiveNetns(t)
	e := newPrestartEnv(t, TierDig, true)
	// Real nft/nsenter from the host, fake podman and dig from the test.
	fakeBin(t, e.tools.Path, "podman", readFile(t, filepath.Join(ns.bin, "podman")))
	fakeBin(t, e.tools.Path, "dig", `case "$2" in ok.example.com) echo 203.0.113.50 ;; two.example.com) printf "203.0.113.60\\n203.0.113.61\\n" ;; three.example.com) echo 203.0.113.70 ;; esac`+"\n")
	for _, tool := range []string{"nft", "nsenter"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Skipf("%s not installed", tool)
		}
		if err := os.Symlink(p, filepath.Join(e.tools.Path, tool)); err != nil {
			t.Fatal(err)
		}
	}
	s := e.shield(0, infoSlirp, true)
	if _, err := s.PreStart(ctx, "c1", nil); err != nil {
		t.Fatal(err)
	}
	dir, _ := filepath.EvalSymlinks(e.stateDir)
	if tier == TierDnsmasq {
		// Same bundle in the dnsmasq tier: allow sets with timeouts,
		// permanent profile elements.
		writeText(t, filepath.Join(dir, "dns.tier"), "dnsmasq\n")
		script, err := s.bundleRuleset(dir, TierDnsmasq, "slirp4netns", "10.0.2.3")
		if err != nil {
			t.Fatal(err)
		}
		writeText(t, filepath.Join(dir, "ruleset.nft"), script)
	}
	// What the hook does at createRuntime.
	if st := s.State(ctx, "c1"); st != StateInactive {
		t.Fatalf("state before = %s", st)
	}
	cmd := exec.Command("ip", "netns", "exec", ns.name, "nft", "-f", filepath.Join(dir, "ruleset.nft"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("apply ruleset.nft: %v %s", err, out)
	}
	if st := s.State(ctx, "c1"); st != StateUp {
		t.Fatalf("state = %s\n%s", st, s.Rules(ctx, "c1"))
	}
	// The launcher's post-start check: container.id from the hook, live table.
	if err := s.VerifyStarted(ctx, "c1", "0123456789abcdef"); err == nil || !strings.Contains(err.Error(), "hook did not run") {
		t.Fatalf("VerifyStarted without container.id: %v", err)
	}
	writeText(t, filepath.Join(dir, "container.id"), "0123456789ab\n")
	if err := s.VerifyStarted(ctx, "c1", "0123456789abcdef"); err != nil {
		t.Fatalf("VerifyStarted: %v", err)
	}
	if err := s.VerifyStarted(ctx, "c1", "ffff456789abcdef"); err == nil {
		t.Fatal("VerifyStarted accepted another container's id")
	}
	var dnsmasqPID int
	if tier == TierDnsmasq {
		dnsmasqPID = startTestDnsmasq(t, ns, e.tools.Path, dir)
	}
	setOf := func(name string) []string {
		return parseSetElements(ns.nft(t, "list", "set", "inet", "terok_shield", name))
	}
	has := func(name, addr string) bool {
		for _, e := range setOf(name) {
			if e == addr {
				return true
			}
		}
		return false
	}

	// allow an IP, then one inside an allowed range (no overlap error).
	if ips, err := s.Allow(ctx, "c1", "203.0.113.7"); err != nil || !reflect.DeepEqual(ips, []string{"203.0.113.7"}) {
		t.Fatalf("allow: %q %v", ips, err)
	}
	if !has("allow_v4", "203.0.113.7") {
		t.Fatalf("not in allow_v4: %q", setOf("allow_v4"))
	}
	if ips, err := s.Allow(ctx, "c1", "198.51.100.9"); err != nil || len(ips) != 1 {
		t.Fatalf("allow covered: %q %v", ips, err)
	}
	// A range covering a live element replaces it.
	if ips, err := s.Allow(ctx, "c1", "203.0.113.0/28"); err != nil || len(ips) != 1 {
		t.Fatalf("allow range: %q %v", ips, err)
	}
	if !has("allow_v4", "203.0.113.0/28") || has("allow_v4", "203.0.113.7") {
		t.Fatalf("allow_v4 after range: %q", setOf("allow_v4"))
	}
	if ips, err := s.Allow(ctx, "c1", "2001:db8::99"); err != nil || len(ips) != 1 || !has("allow_v6", "2001:db8::99") {
		t.Fatalf("allow v6: %q %v %q", ips, err, setOf("allow_v6"))
	}
	// A domain resolves on the host.
	if ips, err := s.Allow(ctx, "c1", "two.example.com"); err != nil || !reflect.DeepEqual(ips, []string{"203.0.113.60", "203.0.113.61"}) {
		t.Fatalf("allow domain: %q %v", ips, err)
	}
	if got := readState(t, dir, "live.allowed"); got != "203.0.113.7\n198.51.100.9\n203.0.113.0/28\n2001:db8::99\n203.0.113.60\n203.0.113.61\n" {
		t.Fatalf("live.allowed = %q", got)
	}
	if tier == TierDnsmasq {
		if got := readState(t, dir, "live.domains"); got != "two.example.com\n" {
			t.Fatalf("live.domains = %q", got)
		}
		if !strings.Contains(readState(t, dir, "dnsmasq.conf"), "nftset=/two.example.com/") {
			t.Fatalf("dnsmasq.conf not regenerated")
		}
		// dnsmasq was restarted (not SIGHUPed): a new process, ours, and the
		// old one is gone.
		newPID, err := strconv.Atoi(strings.TrimSpace(readState(t, dir, "dnsmasq.pid")))
		if err != nil || newPID == dnsmasqPID || !processAlive(newPID) || processAlive(dnsmasqPID) {
			t.Fatalf("dnsmasq not restarted: old %d (alive %v) new %d (alive %v) %v", dnsmasqPID, processAlive(dnsmasqPID), newPID, processAlive(newPID), err)
		}
		t.Cleanup(func() { _ = syscall.Kill(newPID, syscall.SIGTERM) })
		// A stale PID file (not our dnsmasq) is refused and removed.
		writeText(t, filepath.Join(dir, "dnsmasq.pid"), strconv.Itoa(os.Getpid())+"\n")
		if _, err := s.Allow(ctx, "c1", "*.three.example.com"); err == nil || !strings.Contains(err.Error(), "is not dnsmasq (stale PID file)") {
			t.Fatalf("stale pid: %v", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "dnsmasq.pid")); err == nil {
			t.Fatal("stale PID file kept")
		}
		if !strings.Contains(ns.nft(t, "list", "set", "inet", "terok_shield", "allow_v4"), "203.0.113.60 timeout 3650d") {
			t.Fatalf("live element not permanent:\n%s", ns.nft(t, "list", "set", "inet", "terok_shield", "allow_v4"))
		}
	}

	// deny: a profile address (persisted), a live one (removed), one inside
	// an allowed range (deny set wins).
	if ips, err := s.Deny(ctx, "c1", "203.0.113.50"); err != nil || len(ips) != 1 {
		t.Fatalf("deny: %q %v", ips, err)
	}
	if has("allow_v4", "203.0.113.50") || !has("deny_v4", "203.0.113.50") {
		t.Fatalf("deny not live: allow %q deny %q", setOf("allow_v4"), setOf("deny_v4"))
	}
	if got := readState(t, dir, "deny.list"); got != "203.0.113.50\n" || readState(t, dir, "dns.tier") != tier+"\n" {
		t.Fatalf("deny.list = %q", got)
	}
	if _, err := s.Deny(ctx, "c1", "203.0.113.61"); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(readState(t, dir, "live.allowed"), "203.0.113.61\n") {
		t.Fatal("denied address still in live.allowed")
	}
	if _, err := s.Deny(ctx, "c1", "198.51.100.20"); err != nil || !has("deny_v4", "198.51.100.20") {
		t.Fatalf("deny inside range: %v %q", err, setOf("deny_v4"))
	}
	// re-allow removes the deny entry.
	if _, err := s.Allow(ctx, "c1", "203.0.113.50"); err != nil {
		t.Fatal(err)
	}
	if has("deny_v4", "203.0.113.50") || !has("allow_v4", "203.0.113.50") || strings.Contains(readState(t, dir, "deny.list"), "203.0.113.50") {
		t.Fatalf("re-allow: allow %q deny %q", setOf("allow_v4"), setOf("deny_v4"))
	}

	// The bundle ruleset (what the hook applies on a restart) follows.
	rs := readState(t, dir, "ruleset.nft")
	if !strings.Contains(rs, "add element inet terok_shield deny_v4 { 198.51.100.20") || strings.Contains(rs, "203.0.113.50 }") ||
		!strings.Contains(rs, "203.0.113.0/28") || !strings.Contains(rs, "2001:db8::99") {
		t.Fatalf("ruleset.nft not refreshed:\n%s", rs)
	}
	if !strings.Contains(readState(t, dir, "deny.list"), "198.51.100.20\n") {
		t.Fatalf("deny inside an allowed range not persisted: %q", readState(t, dir, "deny.list"))
	}
	if errs := ruleset.VerifyHook(rs, false); len(errs) > 0 {
		t.Fatalf("refreshed ruleset.nft: %v", errs)
	}

	// down / down --all / up, with the gateway sets kept.
	for _, step := range []struct {
		op   func() error
		want string
	}{
		{func() error { return s.Down(ctx, "c1", false) }, StateDown},
		{func() error { return s.Down(ctx, "c1", true) }, StateDownAll},
		{func() error { return s.Up(ctx, "c1") }, StateUp},
	} {
		if err := step.op(); err != nil {
			t.Fatal(err)
		}
		if st := s.State(ctx, "c1"); st != step.want {
			t.Fatalf("state %s, want %s", st, step.want)
		}
		if !has("gateway_v4", "10.0.2.2") {
			t.Fatalf("gateway set empty in %s", step.want)
		}
	}
	// A container whose firewall is down does not pass the launcher's check.
	if err := s.Down(ctx, "c1", false); err != nil {
		t.Fatal(err)
	}
	if err := s.VerifyStarted(ctx, "c1", "0123456789abcdef"); err == nil || !strings.Contains(err.Error(), "verification failed") {
		t.Fatalf("VerifyStarted with the bypass ruleset: %v", err)
	}
	if err := s.Up(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	// After up, the live allowlist and deny list are back.
	if !has("allow_v4", "203.0.113.50") || !has("allow_v4", "203.0.113.0/28") || !has("deny_v4", "198.51.100.20") {
		t.Fatalf("up lost state: allow %q deny %q", setOf("allow_v4"), setOf("deny_v4"))
	}
	prev, err := s.Preview(true, true)
	if err != nil || ruleset.VerifyBypass(prev, true) != nil {
		t.Fatalf("preview: %v %v", err, ruleset.VerifyBypass(prev, true))
	}
	if _, err := s.Preview(false, true); err == nil {
		t.Fatal("--all without --down accepted")
	}

	// Audit trail.
	events, err := s.AuditTail(100)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, ev := range events {
		actions = append(actions, ev.Action)
	}
	joined := strings.Join(actions, " ")
	for _, w := range []string{"setup", "allowed", "denied", "shield_down", "shield_up"} {
		if !strings.Contains(joined, w) {
			t.Errorf("audit lacks %s: %s", w, joined)
		}
	}

	// Bad input never reaches nft.
	for _, bad := range []string{"1.2.3", "1.2.3.4; flush ruleset", "com"} {
		if _, err := s.Allow(ctx, "c1", bad); err == nil {
			t.Errorf("allow %q accepted", bad)
		}
	}
	// A container that is not running.
	fakeBin(t, e.tools.Path, "podman", "echo 0\n")
	if _, err := s.Allow(ctx, "c1", "203.0.113.99"); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Fatalf("stopped container: %v", err)
	}
	if st := s.State(ctx, "c1"); st != StateInactive {
		t.Fatalf("state of stopped = %s", st)
	}
	if err := s.VerifyStarted(ctx, "c1", "0123456789abcdef"); err != nil {
		t.Fatalf("VerifyStarted of an exited container: %v", err)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(string(data), "#!/bin/sh\n")
}

// startTestDnsmasq starts the bundle's dnsmasq in the namespace the way the
// hook does, and returns its PID.
func startTestDnsmasq(t *testing.T, ns liveNetns, binDir, dir string) int {
	t.Helper()
	dnsmasq, err := exec.LookPath("dnsmasq")
	if err != nil {
		t.Skip("dnsmasq not installed")
	}
	if err := os.Symlink(dnsmasq, filepath.Join(binDir, "dnsmasq")); err != nil {
		t.Fatal(err)
	}
	conf, err := shieldbundle.DnsmasqConf("10.0.2.3", dir, []string{"ok.example.com"}, os.Getpid(), nil)
	if err != nil {
		t.Fatal(err)
	}
	writeText(t, filepath.Join(dir, "dnsmasq.conf"), string(conf))
	if out, err := exec.Command("ip", "netns", "exec", ns.name, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v %s", err, out)
	}
	if out, err := exec.Command("ip", "netns", "exec", ns.name, "dnsmasq", "--conf-file="+filepath.Join(dir, "dnsmasq.conf")).CombinedOutput(); err != nil {
		t.Fatalf("start dnsmasq: %v %s", err, out)
	}
	var pid int
	deadline := time.Now().Add(10 * time.Second)
	for {
		if data, err := os.ReadFile(filepath.Join(dir, "dnsmasq.pid")); err == nil {
			if pid, err = strconv.Atoi(strings.TrimSpace(string(data))); err == nil && pid > 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("dnsmasq wrote no pid file")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGTERM) })
	return pid
}
