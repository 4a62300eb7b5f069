package shield

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
)

// buildHook builds the real terok-shield-hook into a temporary directory.
func buildHook(t *testing.T) string {
	t.Helper()
	exe := filepath.Join(t.TempDir(), shieldbundle.HookBinary)
	if out, err := exec.Command("go", "build", "-o", exe, "terok.dev/sandbox/shield-hook/cmd/terok-shield-hook").CombinedOutput(); err != nil {
		t.Fatalf("build the hook: %v\n%s", err, out)
	}
	return exe
}

// TestLiveInteractiveUpDown: an interactive bundle's table, applied the
// hook's way, is up and verifies as interactive; shield down and shield
// up go through the container's own hook executable (apply-ruleset), so
// the queue rules come back on a kernel without nft_queue too, without
// bypass, and the live table passes the runner's verification.
func TestLiveInteractiveUpDown(t *testing.T) {
	ctx := context.Background()
	ns := newLiveNetns(t)
	e := newPrestartEnv(t, true)
	fakeBin(t, e.tools.Path, "podman", readFile(t, filepath.Join(ns.bin, "podman")))
	for _, tool := range []string{"nft", "nsenter"} {
		p, _ := exec.LookPath(tool)
		if err := os.Symlink(p, filepath.Join(e.tools.Path, tool)); err != nil {
			t.Fatal(err)
		}
	}
	s := e.shield(0, infoSlirp, true)
	s.cfg.Mode = shieldbundle.ModeInteractive
	if _, err := s.PreStart(ctx, "c1", nil); err != nil {
		t.Fatal(err)
	}
	dir, _ := filepath.EvalSymlinks(e.stateDir)
	// The container's hook link names the real hook (PreStart linked the
	// test's stand-in).
	link := filepath.Join(dir, shieldbundle.HookBinary)
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(buildHook(t), link); err != nil {
		t.Fatal(err)
	}
	apply := func(mode string) (string, error) {
		cmd := exec.Command("ip", "netns", "exec", ns.name, link, shieldbundle.ApplySubcommand, shieldbundle.ApplyModeArg(mode))
		f, err := os.Open(filepath.Join(dir, shieldbundle.FileRuleset))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cmd.Stdin = f
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// The table of another mode fails the hook's checks and is not left
	// in force.
	if out, err := apply(shieldbundle.ModeEnforce); err == nil || !strings.Contains(out, "unexpected queue verdict") {
		t.Fatalf("interactive table applied as enforce: %v %s", err, out)
	}
	if out, err := apply(shieldbundle.ModeInteractive); err != nil {
		t.Fatalf("apply ruleset.nft: %v %s", err, out)
	}
	check := func(what string) {
		t.Helper()
		// Standard output only: nft warns on stderr about a table that
		// holds an xtables target.
		out, err := exec.Command("ip", "netns", "exec", ns.name, "nft", "list", "table", "inet", ruleset.Table).Output()
		if err != nil {
			t.Fatalf("%s: list: %v", what, err)
		}
		listing := string(out)
		if st := s.State(ctx, "c1"); st != StateUp {
			t.Fatalf("%s: state %s\n%s", what, st, listing)
		}
		if errs := verifyEnforcing(dir, listing); len(errs) != 0 {
			t.Fatalf("%s: %v\n%s", what, errs, listing)
		}
		if n := strings.Count(listing, "queue"); n != len(ruleset.QueueMatches()) || strings.Contains(listing, "bypass") {
			t.Fatalf("%s: %d queue rules (want %d), bypass=%v:\n%s", what, n, len(ruleset.QueueMatches()), strings.Contains(listing, "bypass"), listing)
		}
	}
	check("hook's apply")
	startFakeResolver(t, dir, false)
	// allow and deny change elements with nft over a table that holds the
	// xtables target (on this kernel): the queue rules stay as they are.
	if _, err := s.Allow(ctx, "c1", "203.0.113.7"); err != nil {
		t.Fatalf("allow: %v", err)
	}
	if _, err := s.Deny(ctx, "c1", "203.0.113.8"); err != nil {
		t.Fatalf("deny: %v", err)
	}
	for set, addr := range map[string]string{"allow_v4": "203.0.113.7", "deny_v4": "203.0.113.8"} {
		if out, _ := exec.Command("ip", "netns", "exec", ns.name, "nft", "list", "set", "inet", ruleset.Table, set).Output(); !strings.Contains(string(out), addr) {
			t.Fatalf("%s not in %s:\n%s", addr, set, out)
		}
	}
	check("allow and deny")
	if err := s.Down(ctx, "c1", false); err != nil {
		t.Fatal(err)
	}
	if st := s.State(ctx, "c1"); st != StateDown {
		t.Fatalf("after down: %s", st)
	}
	if err := s.Up(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	check("shield up")
	// Quarantine replaces the queue table; up brings the queue rules back.
	if _, err := s.Quarantine(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if st := s.State(ctx, "c1"); st != StateQuarantine {
		t.Fatalf("after quarantine: %s", st)
	}
	if err := s.Up(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	check("shield up after quarantine")
	// Up over an up table (a leftover replaced, not merged into).
	if err := s.Up(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	check("shield up again")
}
