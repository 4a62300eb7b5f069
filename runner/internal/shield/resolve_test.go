package shield

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/runner/internal/profile"
)

func TestProfilesCatalog(t *testing.T) {
	dir := t.TempDir()
	writeText(t, filepath.Join(dir, "dev-standard.txt"), "# mine\nexample.com\n198.51.100.0/24\n")
	writeText(t, filepath.Join(dir, "mine.txt"), "a.example\nb.example\n2001:db8::1\n")
	writeText(t, filepath.Join(dir, "broken.txt"), "ok.example\n1.2.3.4; flush ruleset\n")
	writeText(t, filepath.Join(dir, "not a profile.txt"), "x.example\n")
	writeText(t, filepath.Join(dir, "notes.md"), "x.example\n")
	cat := profile.Store{UserDir: dir}.Catalog([]string{"mine", "base"})
	got := map[string]profile.Info{}
	var names []string
	for _, p := range cat {
		got[p.Name] = p
		names = append(names, p.Name)
	}
	if strings.Join(names, " ") != "base broken dev-node dev-python dev-standard mine nvidia-hpc" {
		t.Fatalf("names %v", names)
	}
	for _, tc := range []struct {
		name                 string
		source, path         string
		shadows, configured  bool
		entries, doms, addrs int
		errPart              string
	}{
		{"dev-standard", "user", filepath.Join(dir, "dev-standard.txt"), true, false, 2, 1, 1, ""},
		{"mine", "user", filepath.Join(dir, "mine.txt"), false, true, 3, 2, 1, ""},
		{"broken", "user", filepath.Join(dir, "broken.txt"), false, false, 0, 0, 0, "line 2"},
	} {
		p := got[tc.name]
		if p.Source != tc.source || p.Path != tc.path || p.Shadows != tc.shadows || p.Configured != tc.configured ||
			p.Entries != tc.entries || p.Domains != tc.doms || p.Addresses != tc.addrs || (tc.errPart == "") != (p.Error == "") || !strings.Contains(p.Error, tc.errPart) {
			t.Errorf("%s: %+v", tc.name, p)
		}
	}
	base := got["base"]
	if base.Source != "bundled" || base.Path != "" || base.Shadows || !base.Configured || base.Entries == 0 || base.Entries != base.Domains+base.Addresses {
		t.Errorf("base: %+v", base)
	}
	// Bundled only.
	if cat := (profile.Store{}).Catalog(nil); len(cat) != 5 || cat[0].Source != "bundled" {
		t.Fatalf("bundled catalog %+v", cat)
	}
}

// TestResolveProtocol drives Resolve against a real netns (the container
// must run) and a fake resolver that answers the request the way the real
// one does (docs/shield-resolver.md, Resolve now); one that did not
// announce the feature is refused and never signalled (its SIGUSR1 default
// would kill it).
func TestResolveProtocol(t *testing.T) {
	ctx := context.Background()
	_, e, s, dir := newLiveShield(t)

	old := startFakeResolver(t, dir, false)
	if _, err := s.Resolve(ctx, "c1", false); err == nil || !strings.Contains(err.Error(), "older terok-shield-hook") {
		t.Fatalf("resolve with an old resolver: %v", err)
	}
	if !shieldbundle.IsOurResolver(old.pid(), dir) {
		t.Fatal("the old resolver was signalled")
	}
	// A features file of another PID does not count either.
	writeText(t, filepath.Join(dir, shieldbundle.FileResolverFeatures), "1 resolve\n")
	if _, err := s.Resolve(ctx, "c1", true); err == nil || !strings.Contains(err.Error(), "older terok-shield-hook") {
		t.Fatalf("resolve with a stale features file: %v", err)
	}
	_ = old.cmd.Process.Kill()
	old.exited(5e9)

	// A resolver that answers: the result names the request's id and
	// whether it was forced.
	req, res, tmp := filepath.Join(dir, shieldbundle.FileResolveRequest), filepath.Join(dir, shieldbundle.FileResolveResult), filepath.Join(dir, ".r")
	answer := "printf '%s resolve\\n' $$ > " + filepath.Join(dir, shieldbundle.FileResolverFeatures) + "\n" +
		"answer() { set -- $(cat " + req + "); f=false; [ \"$2\" = force ] && f=true; " +
		"printf '{\"id\":\"%s\",\"force\":%s,\"names\":[{\"name\":\"ok.example.com\",\"addresses\":[\"198.51.100.7\"],\"rcode\":\"NOERROR\"}]}\\n' \"$1\" \"$f\" > " + tmp + " && mv " + tmp + " " + res + "; }\n" +
		"trap answer USR1\n"
	startFakeResolverWith(t, dir, false, answer)
	for _, force := range []bool{false, true} {
		got, err := s.Resolve(ctx, "c1", force)
		if err != nil {
			t.Fatalf("resolve force=%v: %v", force, err)
		}
		if got.Force != force || len(got.Names) != 1 || got.Names[0].Addresses[0] != "198.51.100.7" {
			t.Fatalf("result %+v", got)
		}
	}
	events, _ := s.AuditTail(2)
	if len(events) != 2 || events[0].Action != "resolve" || events[1].Detail != "names=1 force=true" {
		t.Fatalf("audit %+v", events)
	}
	// Not running: an error before anything is signalled.
	fakeBin(t, e.tools.Path, "podman", "echo '"+inspectJSON(0, nil)+"'\n")
	if _, err := s.Resolve(ctx, "c1", false); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Fatalf("resolve of a stopped container: %v", err)
	}
}
