package integration

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"terok.dev/sandbox/common/shieldbundle"
)

// resolveOnce makes one `shield resolve` request of the resolver the way
// the runner does (docs/shield-resolver.md, Resolve now) and waits for
// its result.
func resolveOnce(t *testing.T, dir string, pid int, id string, force bool) shieldbundle.ResolveResult {
	t.Helper()
	text, err := shieldbundle.ResolveRequest{ID: id, Force: force}.Format()
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, shieldbundle.FileResolveRequest, text)
	if err := syscall.Kill(pid, shieldbundle.ResolveSignal); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if data, err := os.ReadFile(filepath.Join(dir, shieldbundle.FileResolveResult)); err == nil {
			if res, err := shieldbundle.ParseResolveResult(data); err == nil && res.ID == id {
				return res
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no resolve result %s; dns.log:\n%s", id, readFile(t, filepath.Join(dir, shieldbundle.FileDNSLog)))
	return shieldbundle.ResolveResult{}
}

// TestResolverResolveNow: the resolver announces the feature with its own
// PID; a request looks up every allowlisted name (a "*." entry by its
// base name) through its forwarding path: the answers land in the learned
// sets, the resolver keeps running; a second request is served from the
// cache (no upstream query), a forced one asks the upstream again; an
// unknown name reports NXDOMAIN.
func TestResolverResolveNow(t *testing.T) {
	tp := newTopo(t)
	up := startTestUpstream(t, tp)
	dir := stateDir(t)
	resolverBundle(t, dir)
	writeFile(t, dir, shieldbundle.FileProfileDomains, nameListed+"\n*.missing.shield.test\n")
	pid := startedResolver(t, tp, dir)
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, _ := os.ReadFile(filepath.Join(dir, shieldbundle.FileResolverFeatures))
		if shieldbundle.HasFeature(data, pid, shieldbundle.FeatureResolve) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("resolver.features = %q, pid %d", data, pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if strings.Contains(learned(t, tp), allowV4) {
		t.Fatal("learned before any lookup")
	}

	res := resolveOnce(t, dir, pid, "0123456789abcdef", false)
	if len(res.Names) != 2 {
		t.Fatalf("names %+v", res.Names)
	}
	got := map[string]shieldbundle.ResolvedName{}
	for _, n := range res.Names {
		got[n.Name] = n
	}
	ok := got[nameListed]
	if ok.Rcode != "NOERROR" || ok.RcodeAAAA != "NOERROR" || strings.Join(ok.Addresses, ",") != allowV4+","+allowV6 || ok.Cached {
		t.Fatalf("%s: %+v", nameListed, ok)
	}
	if miss := got["missing.shield.test"]; miss.Rcode != "NXDOMAIN" || miss.RcodeAAAA != "NXDOMAIN" || len(miss.Addresses) != 0 {
		t.Fatalf("missing name: %+v", miss)
	}
	l := learned(t, tp)
	if !strings.Contains(l, allowV4) || !strings.Contains(l, allowV6) {
		t.Fatalf("resolved addresses not learned:\n%s", l)
	}
	if up.count(nameListed, 1) != 1 {
		t.Fatalf("upstream asked %d times for %s A", up.count(nameListed, 1), nameListed)
	}
	tp.mustReach("resolved address", tp.tcp(allowV4, appPort))

	// Cached: no new upstream query.
	res = resolveOnce(t, dir, pid, "1123456789abcdef", false)
	for _, n := range res.Names {
		if n.Name == nameListed && !n.Cached {
			t.Fatalf("second request not from the cache: %+v", n)
		}
	}
	if up.count(nameListed, 1) != 1 {
		t.Fatalf("cached request asked the upstream: %d", up.count(nameListed, 1))
	}
	// Forced: the cache goes first.
	res = resolveOnce(t, dir, pid, "2123456789abcdef", true)
	if !res.Force || up.count(nameListed, 1) != 2 {
		t.Fatalf("forced request: force=%v upstream=%d", res.Force, up.count(nameListed, 1))
	}
	// A malformed request is ignored and the resolver keeps serving.
	writeFile(t, dir, shieldbundle.FileResolveRequest, "not a request\n")
	if err := syscall.Kill(pid, shieldbundle.ResolveSignal); err != nil {
		t.Fatal(err)
	}
	if m, err := tp.query("127.0.0.1", nameListed, 1, "udp"); err != nil || len(answerAddrs(m)) == 0 {
		t.Fatalf("resolver after a malformed request: %v %v", m, err)
	}
	if !shieldbundle.IsOurResolver(pid, dir) {
		t.Fatal("resolver gone")
	}
}
