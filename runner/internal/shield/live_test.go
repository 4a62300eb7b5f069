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
			if add, _ := ruleset.Elements("add", ruleset.KindAllow, []string{addr}, false); add == "" {
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
// running container: a fake `podman container inspect` reports that process's PID,
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
	fakeBin(t, bin, "podman", "[ \"$1 $2\" = \"container inspect\" ] && echo '"+inspectJSON(cmd.Process.Pid, nil)+"' && exit 0\nexit 125\n")
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

// newLiveShield is the setup of the live tests: a liveNetns standing in for
// container c1, a prestartEnv whose tools are the netns's fake podman and
// the host's real nft and nsenter, and c1's shield after PreStart. It
// returns the netns, the env, the shield and c1's state directory (links
// resolved); applying ruleset.nft and starting a resolver are left to the
// test.
func newLiveShield(t *testing.T) (liveNetns, prestartEnv, *Shield, string) {
	t.Helper()
	ns := newLiveNetns(t)
	e := newPrestartEnv(t, true)
	fakeBin(t, e.tools.Path, "podman", readFile(t, filepath.Join(ns.bin, "podman")))
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
	if _, err := s.PreStart(context.Background(), "c1", nil); err != nil {
		t.Fatal(err)
	}
	dir, _ := filepath.EvalSymlinks(e.stateDir)
	return ns, e, s, dir
}

func TestLiveOperations(t *testing.T) {
	ctx := context.Background()
	ns, e, s, dir := newLiveShield(t)
	// What the hook does at createRuntime: apply ruleset.nft, start the
	// resolver (here a process that passes the identity check).
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
	res := startFakeResolver(t, dir, false)
	// What the real resolver reports once it serves; VerifyStarted waits for it.
	if err := shieldbundle.WriteResolverReady(dir, shieldbundle.ResolverReadyOK); err != nil {
		t.Fatal(err)
	}
	hups := 0
	wantHUP := func(what string) {
		t.Helper()
		hups++
		if n := res.hups(t, hups); n != hups {
			t.Fatalf("%s: resolver got %d SIGHUPs, want %d", what, n, hups)
		}
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
	setOf := func(name string) []string {
		return parseSetElements(ns.nft(t, "list", "set", "inet", "terok_shield", name))
	}
	has := func(name, addr string) bool { return containsString(setOf(name), addr) }
	learn := func(elems string) {
		t.Helper()
		ns.nft(t, "add", "element", "inet", "terok_shield", "dns_v4", "{ "+elems+" }")
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
	// An explicit special address is the operator's deliberate choice: it
	// goes to the allow set, which comes before the special rejects.
	if ips, err := s.Allow(ctx, "c1", "10.9.8.7"); err != nil || len(ips) != 1 || !has("allow_v4", "10.9.8.7") {
		t.Fatalf("allow special: %q %v %q", ips, err, setOf("allow_v4"))
	}
	// A domain is resolved by the container's resolver, not here: nothing
	// is added to any set, the resolver is told to reload.
	before := setOf("allow_v4")
	if ips, err := s.Allow(ctx, "c1", "two.example.com"); err != nil || ips != nil {
		t.Fatalf("allow domain: %q %v", ips, err)
	}
	wantHUP("allow domain")
	if !reflect.DeepEqual(setOf("allow_v4"), before) || len(setOf("dns_v4")) != 0 {
		t.Fatalf("allow domain changed the sets: allow %q dns %q", setOf("allow_v4"), setOf("dns_v4"))
	}
	if got := readState(t, dir, "live.domains"); got != "two.example.com\n" {
		t.Fatalf("live.domains = %q", got)
	}
	if got := readState(t, dir, "live.allowed"); got != "203.0.113.7\n198.51.100.9\n203.0.113.0/28\n2001:db8::99\n10.9.8.7\n" {
		t.Fatalf("live.allowed = %q", got)
	}
	// A listed domain again: no change, still a reload.
	if _, err := s.Allow(ctx, "c1", "ok.example.com"); err != nil {
		t.Fatal(err)
	}
	wantHUP("allow listed domain")
	if got := readState(t, dir, "live.domains"); got != "two.example.com\n" {
		t.Fatalf("live.domains after a listed domain = %q", got)
	}

	// What the resolver learns lands in the dns sets with a timeout; a
	// deny of such an address (or of a range around it) removes it there
	// and puts it in the deny set, persisted.
	learn("198.51.100.60 timeout 5m, 198.51.100.70 timeout 5m, 198.51.100.71 timeout 5m, 203.0.113.200 timeout 5m")
	if ips, err := s.Deny(ctx, "c1", "198.51.100.60"); err != nil || len(ips) != 1 {
		t.Fatalf("deny learned: %q %v", ips, err)
	}
	if has("dns_v4", "198.51.100.60") || !has("deny_v4", "198.51.100.60") || !has("dns_v4", "198.51.100.70") {
		t.Fatalf("deny learned: dns %q deny %q", setOf("dns_v4"), setOf("deny_v4"))
	}
	if _, err := s.Deny(ctx, "c1", "198.51.100.64/28"); err != nil {
		t.Fatal(err)
	}
	if has("dns_v4", "198.51.100.70") || has("dns_v4", "198.51.100.71") || !has("dns_v4", "203.0.113.200") || !has("deny_v4", "198.51.100.64/28") {
		t.Fatalf("deny range: dns %q deny %q", setOf("dns_v4"), setOf("deny_v4"))
	}
	// deny: a profile address (persisted), a live one (removed), one inside
	// an allowed range (deny set wins).
	if _, err := s.Deny(ctx, "c1", "2001:db8::1"); err != nil || !has("deny_v6", "2001:db8::1") {
		t.Fatalf("deny profile address: %v %q", err, setOf("deny_v6"))
	}
	if _, err := s.Deny(ctx, "c1", "198.51.100.20"); err != nil || !has("deny_v4", "198.51.100.20") {
		t.Fatalf("deny inside range: %v %q", err, setOf("deny_v4"))
	}
	if _, err := s.Deny(ctx, "c1", "10.9.8.7"); err != nil || has("allow_v4", "10.9.8.7") {
		t.Fatalf("deny live: %v %q", err, setOf("allow_v4"))
	}
	if strings.Contains(readState(t, dir, "live.allowed"), "10.9.8.7\n") {
		t.Fatal("denied address still in live.allowed")
	}
	if got := readState(t, dir, "deny.list"); got != "198.51.100.60\n198.51.100.64/28\n2001:db8::1\n198.51.100.20\n10.9.8.7\n" {
		t.Fatalf("deny.list = %q", got)
	}
	// re-allow removes the deny entry.
	if _, err := s.Allow(ctx, "c1", "198.51.100.60"); err != nil {
		t.Fatal(err)
	}
	if has("deny_v4", "198.51.100.60") || strings.Contains(readState(t, dir, "deny.list"), "198.51.100.60\n") {
		t.Fatalf("re-allow: deny %q", setOf("deny_v4"))
	}

	// Domains: deny a live one and a profile one (masked in
	// denied.domains), refuse a subdomain of a listed one and an unlisted one.
	if ips, err := s.Deny(ctx, "c1", "two.example.com"); err != nil || ips != nil {
		t.Fatalf("deny domain: %q %v", ips, err)
	}
	wantHUP("deny domain")
	if _, err := s.Deny(ctx, "c1", "ok.example.com"); err != nil {
		t.Fatal(err)
	}
	wantHUP("deny profile domain")
	if got := readState(t, dir, "denied.domains"); got != "two.example.com\nok.example.com\n" || readState(t, dir, "live.domains") != "" {
		t.Fatalf("denied.domains = %q live.domains = %q", got, readState(t, dir, "live.domains"))
	}
	for target, want := range map[string]string{
		"a.wild.example.org": "subdomain of the listed *.wild.example.org",
		"nowhere.example":    "not on the container's domain allowlist",
	} {
		if _, err := s.Deny(ctx, "c1", target); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("deny %s: %v, want %q", target, err, want)
		}
	}
	wantHUP0 := res.hups(t, hups)
	if wantHUP0 != hups {
		t.Fatalf("a refused deny signalled the resolver")
	}
	// Allowing a denied profile domain lifts the mask.
	if _, err := s.Allow(ctx, "c1", "ok.example.com"); err != nil {
		t.Fatal(err)
	}
	wantHUP("allow denied profile domain")
	if got := readState(t, dir, "denied.domains"); got != "two.example.com\n" {
		t.Fatalf("denied.domains = %q", got)
	}

	// The bundle ruleset (what the hook applies on a restart) follows.
	rs := readState(t, dir, "ruleset.nft")
	if !strings.Contains(rs, "add element inet terok_shield deny_v4 { 10.9.8.7, 198.51.100.20, 198.51.100.64/28 }") ||
		!strings.Contains(rs, "203.0.113.0/28") || !strings.Contains(rs, "2001:db8::99") || strings.Contains(rs, "terok_shield dns_v4 {") {
		t.Fatalf("ruleset.nft not refreshed:\n%s", rs)
	}
	if errs := ruleset.VerifyHook(rs, false); len(errs) > 0 {
		t.Fatalf("refreshed ruleset.nft: %v", errs)
	}
	// ... and ruleset.nft.sha256 names it, so the hook accepts it on a
	// restart although the launch's digest annotation does not
	// (docs/shield-hook.md, Ruleset digest).
	if got, want := readState(t, dir, shieldbundle.FileRulesetDigest), shieldbundle.RulesetDigest([]byte(rs))+"\n"; got != want {
		t.Fatalf("ruleset.nft.sha256 = %q, want %q", got, want)
	}
	if strings.Contains(rs, ruleset.PastaHostLoopback) {
		t.Fatalf("slirp4netns ruleset has pasta host-loopback rules:\n%s", rs)
	}

	// down / down --all / up: the gateway sets kept, resolver.open
	// written by down and removed by up, the resolver told each time.
	open := filepath.Join(dir, shieldbundle.FileResolverOpen)
	for _, step := range []struct {
		op   func() error
		want string
		open bool
	}{
		{func() error { return s.Down(ctx, "c1", false) }, StateDown, true},
		{func() error { return s.Down(ctx, "c1", true) }, StateDownAll, true},
		{func() error { return s.Up(ctx, "c1") }, StateUp, false},
	} {
		if err := step.op(); err != nil {
			t.Fatal(err)
		}
		wantHUP(step.want)
		if st := s.State(ctx, "c1"); st != step.want {
			t.Fatalf("state %s, want %s", st, step.want)
		}
		if exists(open) != step.open {
			t.Fatalf("%s: resolver.open present = %v", step.want, exists(open))
		}
		if !has("gateway_v4", "10.0.2.2") {
			t.Fatalf("gateway set empty in %s", step.want)
		}
	}
	// A container whose firewall is down does not pass the launcher's check.
	if err := s.Down(ctx, "c1", false); err != nil {
		t.Fatal(err)
	}
	wantHUP("down again")
	if err := s.VerifyStarted(ctx, "c1", "0123456789abcdef"); err == nil || !strings.Contains(err.Error(), "verification failed") {
		t.Fatalf("VerifyStarted with the bypass ruleset: %v", err)
	}
	if err := s.Up(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	wantHUP("up again")
	// After up, the live allowlist and deny list are back.
	if !has("allow_v4", "198.51.100.0/24") || !has("allow_v4", "203.0.113.0/28") || !has("deny_v4", "198.51.100.20") {
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
		actions = append(actions, ev.Action+":"+ev.Dest)
	}
	joined := strings.Join(actions, " ")
	for _, w := range []string{"setup:", "allowed:203.0.113.7", "allowed:two.example.com", "denied:198.51.100.60", "denied:two.example.com", "shield_down:", "shield_up:"} {
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
	// A resolver that should be there but is not: a clear error, and the
	// table still goes up.
	if err := s.Down(ctx, "c1", false); err != nil {
		t.Fatal(err)
	}
	_ = syscall.Kill(res.pid(), syscall.SIGKILL)
	if !res.exited(5 * time.Second) {
		t.Fatal("fake resolver did not die")
	}
	if _, err := s.Allow(ctx, "c1", "three.example.com"); err == nil || !strings.Contains(err.Error(), "container DNS is broken. Restart the container to recover.") {
		t.Fatalf("allow domain with a dead resolver: %v", err)
	}
	if err := s.Up(ctx, "c1"); err == nil || !strings.Contains(err.Error(), "container DNS is broken") {
		t.Fatalf("up with a dead resolver: %v", err)
	}
	if st := s.State(ctx, "c1"); st != StateUp {
		t.Fatalf("up with a dead resolver left state %s", st)
	}
	// A bundle of an older version (no resolver tier) is not changed live.
	writeText(t, filepath.Join(dir, "dns.tier"), "dnsmasq\n")
	for name, op := range map[string]func() error{
		"allow": func() error { _, err := s.Allow(ctx, "c1", "203.0.113.99"); return err },
		"deny":  func() error { _, err := s.Deny(ctx, "c1", "203.0.113.99"); return err },
		"down":  func() error { return s.Down(ctx, "c1", false) },
		"up":    func() error { return s.Up(ctx, "c1") },
	} {
		if err := op(); err == nil || !strings.Contains(err.Error(), "started by an older terok-sandbox (DNS tier dnsmasq") {
			t.Errorf("%s on an old bundle: %v", name, err)
		}
	}
	writeText(t, filepath.Join(dir, "dns.tier"), "resolver\n")
	// A container that is not running.
	fakeBin(t, e.tools.Path, "podman", "echo '"+inspectJSON(0, nil)+"'\n")
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

// TestLiveRulesetPasta: in pasta mode the rebuilt rulesets keep the
// host-loopback rules (169.254.1.2 is the host there), and a configured
// upstream forwarder is the one the rules name.
func TestLiveRulesetPasta(t *testing.T) {
	e := newPrestartEnv(t, true)
	s := e.shield(1000, infoPasta, false)
	s.cfg.UpstreamDNS = "2001:db8::53"
	if _, err := s.PreStart(context.Background(), "c1", nil); err != nil {
		t.Fatal(err)
	}
	dir, _ := filepath.EvalSymlinks(e.stateDir)
	for _, down := range []bool{false, true} {
		text, err := s.Preview(down, false)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(text, "tcp dport 9418 ip daddr 169.254.1.2 accept") || !strings.Contains(text, "ip6 daddr 2001:db8::53") ||
			strings.Contains(text, "add element inet terok_shield gateway_v4 { 10.0.2.2 }") {
			t.Fatalf("pasta preview (down=%v):\n%s", down, text)
		}
	}
	if err := s.refreshBundleRuleset(dir); err != nil {
		t.Fatal(err)
	}
	if rs := readState(t, dir, "ruleset.nft"); !strings.Contains(rs, "ip daddr 169.254.1.2 accept") || ruleset.VerifyHook(rs, false) != nil {
		t.Fatalf("pasta ruleset.nft: %v\n%s", ruleset.VerifyHook(rs, false), rs)
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
