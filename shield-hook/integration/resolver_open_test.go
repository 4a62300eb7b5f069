package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/shield-hook/internal/hook"
)

// auditedState is ociState with the container's name and the audit log on.
func auditedState(t *testing.T, pid int, dir string) []byte {
	t.Helper()
	var st map[string]any
	if err := json.Unmarshal(ociState(pid, dir, resolverVer), &st); err != nil {
		t.Fatal(err)
	}
	ann := st["annotations"].(map[string]any)
	ann[shieldbundle.AnnName] = "ctr-open"
	ann[shieldbundle.AnnAuditEnabled] = "true"
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestResolverOpenMarkerNeedsBypass: a resolver.open left by `shield down`
// before a restart is removed (and audited) by createRuntime, and a marker
// present under the enforcing table opens nothing: an unlisted TXT is
// refused with zero upstream queries. Only while the bypass table is live
// does the marker forward it, and `shield up`'s table swap closes it again.
func TestResolverOpenMarkerNeedsBypass(t *testing.T) {
	tp := newTopo(t)
	up := startTestUpstream(t, tp)
	dir := stateDir(t)
	resolverBundle(t, dir)
	marker := filepath.Join(dir, shieldbundle.FileResolverOpen)
	writeFile(t, dir, shieldbundle.FileResolverOpen, "open\n")
	r := runHook(t, "createRuntime", auditedState(t, tp.pid, dir))
	if r.code != 0 {
		t.Fatalf("hook: %+v", r)
	}
	pid, ok := shieldbundle.ResolverPID(dir)
	if !ok {
		t.Fatal("resolver.pid does not name our resolver")
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	if _, err := os.Lstat(marker); err == nil {
		t.Fatal("createRuntime kept resolver.open")
	}
	if a := readFile(t, filepath.Join(dir, shieldbundle.FileAudit)); !strings.Contains(a, `"action":"shield_up"`) || !strings.Contains(a, "ctr-open") {
		t.Errorf("marker removal not audited:\n%s", a)
	}

	const unlisted = "tunnel.evil.test"
	refused := func(when string) {
		t.Helper()
		before := up.total()
		m, err := tp.query("127.0.0.1", unlisted, dns.TypeTXT, "udp")
		if err != nil || m.Rcode != dns.RcodeRefused {
			t.Errorf("%s: unlisted TXT: %v %v, want REFUSED", when, m, err)
		}
		if n := up.total() - before; n != 0 {
			t.Errorf("%s: %d upstream queries for an unlisted name", when, n)
		}
	}
	// The marker written again (a stale one, or planted) and reloaded:
	// the live table enforces, so the resolver stays closed.
	writeFile(t, dir, shieldbundle.FileResolverOpen, "open\n")
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	refused("marker under the enforcing table")

	// shield down: the bypass table goes live, then the marker opens.
	bypass, err := ruleset.Bypass(ruleset.Options{DNS: dnsV4, LoopbackPorts: []int{svcPort}}, false)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := tp.nftStdin(string(hook.Transaction([]byte(bypass), nil)), "-f", "-"); err != nil {
		t.Fatalf("apply the bypass table: %v %s", err, out)
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	forwarded := false
	for i := 0; i < 100 && !forwarded; i++ {
		m, err := tp.query("127.0.0.1", unlisted, dns.TypeTXT, "udp")
		forwarded = err == nil && m.Rcode != dns.RcodeRefused && up.count(unlisted, dns.TypeTXT) > 0
		if !forwarded {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if !forwarded {
		t.Fatal("marker under the bypass table: unlisted TXT not forwarded")
	}

	// The enforcing table back with the marker still there (a `shield up`
	// that failed before removing it): the table swap alone closes it.
	script := readFile(t, filepath.Join(dir, shieldbundle.FileRuleset))
	if out, err := tp.nftStdin(string(hook.Transaction([]byte(script), nil)), "-f", "-"); err != nil {
		t.Fatalf("apply the enforcing table: %v %s", err, out)
	}
	closed := false
	for i := 0; i < 100 && !closed; i++ {
		m, err := tp.query("127.0.0.1", unlisted, dns.TypeTXT, "udp")
		closed = err == nil && m.Rcode == dns.RcodeRefused
		if !closed {
			time.Sleep(20 * time.Millisecond)
		}
	}
	refused("marker after the enforcing table replaced the bypass one")
}
