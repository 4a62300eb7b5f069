package shield

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
)

// TestQuarantine runs quarantine, its repetition, allow during quarantine,
// up and a second quarantine lifted by down against a real network
// namespace with real nsenter/nft (only `podman container inspect` is
// scripted) and the fake resolver.
func TestQuarantine(t *testing.T) {
	ctx := context.Background()
	ns, e, s, dir := newLiveShield(t)
	marker := filepath.Join(dir, shieldbundle.FileQuarantine)
	if out, err := exec.Command("ip", "netns", "exec", ns.name, "nft", "-f", filepath.Join(dir, "ruleset.nft")).CombinedOutput(); err != nil {
		t.Fatalf("apply ruleset.nft: %v %s", err, out)
	}
	startFakeResolver(t, dir, false)
	rulesetBefore := readState(t, dir, shieldbundle.FileRuleset)
	writeText(t, filepath.Join(dir, shieldbundle.FileResolverOpen), "open\n")

	changed, err := s.Quarantine(ctx, "c1")
	if err != nil || !changed {
		t.Fatalf("quarantine: changed=%v err=%v", changed, err)
	}
	if st := s.State(ctx, "c1"); st != StateQuarantine {
		t.Fatalf("state after quarantine = %s\n%s", st, s.Rules(ctx, "c1"))
	}
	if !s.Quarantined() || readState(t, dir, shieldbundle.FileQuarantine) != "quarantine\n" {
		t.Fatal("quarantine marker not written")
	}
	if exists(filepath.Join(dir, shieldbundle.FileResolverOpen)) {
		t.Fatal("resolver.open kept in quarantine")
	}
	if readState(t, dir, shieldbundle.FileRuleset) != rulesetBefore {
		t.Fatal("ruleset.nft changed by quarantine (the hook takes the marker)")
	}

	// Again: nothing changes, no second audit record.
	if changed, err := s.Quarantine(ctx, "c1"); err != nil || changed {
		t.Fatalf("second quarantine: changed=%v err=%v", changed, err)
	}
	// The marker without the live table (a table replaced behind our
	// back) is not "already quarantined": the table is applied again.
	ns.nft(t, "-f", filepath.Join(dir, "ruleset.nft"))
	ns.nft(t, "delete", "table", "inet", "terok_shield")
	ns.nft(t, "-f", filepath.Join(dir, "ruleset.nft"))
	if changed, err := s.Quarantine(ctx, "c1"); err != nil || !changed || s.State(ctx, "c1") != StateQuarantine {
		t.Fatalf("quarantine over a replaced table: changed=%v err=%v state=%s", changed, err, s.State(ctx, "c1"))
	}

	// allow while quarantined: persisted and in the (unused) set, the
	// container stays quarantined.
	if _, err := s.Allow(ctx, "c1", "203.0.113.7"); err != nil {
		t.Fatalf("allow in quarantine: %v", err)
	}
	if st := s.State(ctx, "c1"); st != StateQuarantine {
		t.Fatalf("allow lifted the quarantine: %s", st)
	}

	// up restores the enforcing ruleset, with the allow, and lifts it.
	if err := s.Up(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if st := s.State(ctx, "c1"); st != StateUp || exists(marker) {
		t.Fatalf("after up: state %s, marker %v", st, exists(marker))
	}
	if !containsString(parseSetElements(ns.nft(t, "list", "set", "inet", "terok_shield", "allow_v4")), "203.0.113.7") {
		t.Fatal("allow made in quarantine lost at up")
	}
	// down lifts a quarantine as well.
	if _, err := s.Quarantine(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Down(ctx, "c1", false); err != nil {
		t.Fatal(err)
	}
	if st := s.State(ctx, "c1"); st != StateDown || exists(marker) {
		t.Fatalf("after down: state %s, marker %v", st, exists(marker))
	}

	events, err := s.AuditTail(100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range events {
		if ev.Action == "setup" {
			continue
		}
		got = append(got, strings.TrimSpace(ev.Action+" "+ev.Detail))
	}
	want := "quarantine|quarantine|allowed target=203.0.113.7|shield_up quarantine_lifted=True|quarantine|shield_down quarantine_lifted=True"
	if j := strings.Join(got, "|"); j != want {
		t.Fatalf("audit actions\n got %s\nwant %s", j, want)
	}

	// A new launch of the task starts enforcing: pre-start drops the marker.
	if _, err := s.Quarantine(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PreStart(ctx, "c1", nil); err != nil {
		t.Fatal(err)
	}
	if exists(marker) {
		t.Fatal("pre-start kept the quarantine marker")
	}
	if errs := ruleset.VerifyHook(readState(t, dir, shieldbundle.FileRuleset), false); len(errs) != 0 {
		t.Fatalf("ruleset.nft after quarantine and pre-start: %v", errs)
	}

	// A container that does not run cannot be quarantined.
	fakeBin(t, e.tools.Path, "podman", "echo '"+inspectJSON(0, nil)+"'\n")
	if _, err := s.Quarantine(ctx, "c1"); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Fatalf("quarantine of a stopped container: %v", err)
	}
}
