package hook_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
)

// TestDnsmasqTier: the hook starts the container's dnsmasq; a listed domain
// becomes reachable once resolved through it, an unlisted one stays blocked;
// poststop stops that dnsmasq.
func TestDnsmasqTier(t *testing.T) {
	tp := newTopo(t)
	startUpstreamDNS(t, tp)
	dir := stateDir(t)
	writeBundle(t, dir, ruleset.Script{
		Options:   ruleset.Options{DNS: dnsV4, LoopbackPorts: []int{svcPort}, SetTimeout: ruleset.DnsmasqTimeout},
		Allow:     []string{allowV6},
		Permanent: true,
	})
	conf, err := shieldbundle.DnsmasqConf(dnsV4, dir, []string{"allowed.shield.test"}, os.Getpid(), nil)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, shieldbundle.FileDnsmasqConf, string(conf))
	// A stale PID file from an earlier run must not satisfy the hook.
	writeFile(t, dir, shieldbundle.FileDnsmasqPID, "1\n")

	r := runHook(t, "createRuntime", ociState(tp.pid, dir, "4"))
	if r.code != 0 {
		t.Fatalf("hook: %+v\n%s", r, readFile(t, filepath.Join(dir, shieldbundle.FileHookErrorLog)))
	}
	pid, err := shieldbundle.ReadPIDFile(filepath.Join(dir, shieldbundle.FileDnsmasqPID))
	if err != nil || pid == 1 || !shieldbundle.IsOurDnsmasq(pid, dir) {
		t.Fatalf("dnsmasq pid %d (%v) is not our dnsmasq", pid, err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	ctrNS, _ := os.Stat("/run/netns/" + tp.ctr)
	if got, err := os.Stat(fmt.Sprintf("/proc/%d/ns/net", pid)); err != nil || !os.SameFile(ctrNS, got) {
		t.Fatalf("dnsmasq does not run in the container netns")
	}

	tp.mustReject("listed domain before resolution", tp.tcp(allowV4, appPort))
	out, err := digIn(tp.ctr, "127.0.0.1", "allowed.shield.test")
	if err != nil || strings.TrimSpace(out) != allowV4 {
		t.Fatalf("resolve through the container's dnsmasq: %q %v", out, err)
	}
	tp.mustReach("listed domain after resolution", tp.tcp(allowV4, appPort))
	set, _ := tp.nft("list", "set", "inet", "terok_shield", "allow_v4")
	if !strings.Contains(set, allowV4+" expires") {
		t.Errorf("learned address should carry the 30m set timeout:\n%s", set)
	}
	set6, _ := tp.nft("list", "set", "inet", "terok_shield", "allow_v6")
	if !strings.Contains(set6, allowV6+" timeout 3650d") {
		t.Errorf("profile address should be permanent:\n%s", set6)
	}
	out, err = digIn(tp.ctr, "127.0.0.1", "blocked.shield.test")
	if err != nil || strings.TrimSpace(out) != otherV4 {
		t.Fatalf("unlisted domain should still resolve: %q %v", out, err)
	}
	tp.mustReject("unlisted domain after resolution", tp.tcp(otherV4, appPort))
	if !strings.Contains(readFile(t, filepath.Join(dir, shieldbundle.FileDnsmasqLog)), "allowed.shield.test") {
		t.Error("query log missing")
	}

	// poststop (bundle version not checked) stops our dnsmasq.
	r = runHook(t, "poststop", ociState(tp.pid, dir, "3"))
	if r.code != 0 {
		t.Fatalf("poststop: %+v", r)
	}
	if err := syscall.Kill(pid, 0); err == nil && shieldbundle.IsOurDnsmasq(pid, dir) {
		t.Fatal("dnsmasq still running after poststop")
	}
	if _, err := os.Stat(filepath.Join(dir, shieldbundle.FileDnsmasqPID)); err == nil {
		t.Fatal("pid file left after poststop")
	}
	// Nothing left: a second poststop is a no-op.
	if r := runHook(t, "poststop", ociState(tp.pid, dir, "4")); r.code != 0 {
		t.Fatalf("second poststop: %+v", r)
	}
}

// TestPoststopSparesForeignPID: a PID file naming some other process (PID
// reuse) must not get that process signalled.
func TestPoststopSparesForeignPID(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	dir := stateDir(t)
	victim := exec.Command("sleep", "60")
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = victim.Process.Kill(); _ = victim.Wait() }()
	writeFile(t, dir, shieldbundle.FileDnsmasqPID, strconv.Itoa(victim.Process.Pid)+"\n")
	r := runHook(t, "poststop", ociState(0, dir, "4"))
	if r.code != 0 {
		t.Fatalf("poststop: %+v", r)
	}
	time.Sleep(100 * time.Millisecond)
	if err := victim.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatal("foreign process was signalled")
	}
	if _, err := os.Stat(filepath.Join(dir, shieldbundle.FileDnsmasqPID)); err == nil {
		t.Fatal("stale pid file kept")
	}
	// Garbage PID file: nothing to do, exit 0.
	writeFile(t, dir, shieldbundle.FileDnsmasqPID, "not-a-pid\n")
	if r := runHook(t, "poststop", ociState(0, dir, "4")); r.code != 0 {
		t.Fatalf("poststop with garbage pid file: %+v", r)
	}
}

// TestDnsmasqStartFailure: a dnsmasq that cannot start fails the hook.
func TestDnsmasqStartFailure(t *testing.T) {
	tp := newTopo(t)
	dir := stateDir(t)
	writeBundle(t, dir, ruleset.Script{Options: ruleset.Options{DNS: dnsV4, SetTimeout: ruleset.DnsmasqTimeout}})
	writeFile(t, dir, shieldbundle.FileDnsmasqConf, "no-such-option-xyz\n")
	r := runHook(t, "createRuntime", ociState(tp.pid, dir, "4"))
	if r.code == 0 || !strings.Contains(readFile(t, filepath.Join(dir, shieldbundle.FileHookErrorLog)), "start dnsmasq") {
		t.Fatalf("%+v / %s", r, readFile(t, filepath.Join(dir, shieldbundle.FileHookErrorLog)))
	}
}

// TestDnsmasqStoppedWhenRulesetFails: dnsmasq starts while the ruleset is
// applied; when the ruleset fails, the hook fails and leaves no dnsmasq
// running.
func TestDnsmasqStoppedWhenRulesetFails(t *testing.T) {
	tp := newTopo(t)
	dir := stateDir(t)
	good, _, err := ruleset.Script{Options: ruleset.Options{DNS: dnsV4, SetTimeout: ruleset.DnsmasqTimeout}}.Render()
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, shieldbundle.FileRuleset, good+"add element inet terok_shield allow_v4 { 1.2.3.4; flush ruleset }\n")
	conf, err := shieldbundle.DnsmasqConf(dnsV4, dir, []string{"allowed.shield.test"}, os.Getpid(), nil)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, shieldbundle.FileDnsmasqConf, string(conf))
	r := runHook(t, "createRuntime", ociState(tp.pid, dir, "4"))
	if r.code == 0 || !strings.Contains(r.stderr, "apply ruleset") {
		t.Fatalf("%+v", r)
	}
	if pid, err := shieldbundle.ReadPIDFile(filepath.Join(dir, shieldbundle.FileDnsmasqPID)); err == nil && pid > 0 && shieldbundle.IsOurDnsmasq(pid, dir) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		t.Fatalf("dnsmasq %d still running after the hook failed", pid)
	}
}
