package integration

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

// TestDnsmasqTier: a bundle with dnsmasq.conf and no resolver tier (what
// older tools wrote) still gets its dnsmasq started in the container netns
// and stopped by poststop. Resolution through it is not tested: the current
// table accepts DNS to the forwarder only from the resolver's mark, which
// dnsmasq cannot set on its upstream sockets (docs/shield-resolver.md, Why
// not dnsmasq).
func TestDnsmasqTier(t *testing.T) {
	tp := newTopo(t)
	dir := stateDir(t)
	writeBundle(t, dir, ruleset.Script{Options: ruleset.Options{DNS: dnsV4, LoopbackPorts: []int{svcPort}}, Allow: []string{allowV6}})
	conf, err := shieldbundle.DnsmasqConf(dnsV4, dir, []string{"allowed.shield.test"}, os.Getpid(), nil)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, shieldbundle.FileDnsmasqConf, string(conf))
	// A stale PID file from an earlier run must not satisfy the hook.
	writeFile(t, dir, shieldbundle.FileDnsmasqPID, "1\n")

	r := runHook(t, "createRuntime", ociState(tp.pid, dir, resolverVer))
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
	if _, err := os.Stat(filepath.Join(dir, shieldbundle.FileResolverPID)); err == nil {
		t.Fatal("a resolver was started for a dnsmasq bundle")
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
	if r := runHook(t, "poststop", ociState(tp.pid, dir, resolverVer)); r.code != 0 {
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
	writeBundle(t, dir, ruleset.Script{Options: ruleset.Options{DNS: dnsV4}})
	writeFile(t, dir, shieldbundle.FileDnsmasqConf, "no-such-option-xyz\n")
	r := runHook(t, "createRuntime", ociState(tp.pid, dir, resolverVer))
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
	good, _, err := ruleset.Script{Options: ruleset.Options{DNS: dnsV4}}.Render()
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, shieldbundle.FileRuleset, good+"add element inet terok_shield allow_v4 { 1.2.3.4; flush ruleset }\n")
	conf, err := shieldbundle.DnsmasqConf(dnsV4, dir, []string{"allowed.shield.test"}, os.Getpid(), nil)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, shieldbundle.FileDnsmasqConf, string(conf))
	r := runHook(t, "createRuntime", ociState(tp.pid, dir, resolverVer))
	if r.code == 0 || !strings.Contains(r.stderr, "apply ruleset") {
		t.Fatalf("%+v", r)
	}
	if pid, err := shieldbundle.ReadPIDFile(filepath.Join(dir, shieldbundle.FileDnsmasqPID)); err == nil && pid > 0 && shieldbundle.IsOurDnsmasq(pid, dir) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		t.Fatalf("dnsmasq %d still running after the hook failed", pid)
	}
}
