package integration

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/shield-hook/internal/hook"
)

// runHookTimed runs the hook with hook.TimingEnv set and returns its
// stderr, whose timing line names the path taken (netlink or nft).
func runHookTimed(t *testing.T, state []byte) (int, string) {
	t.Helper()
	cmd := exec.Command(hookBin, "createRuntime")
	cmd.Env = []string{hook.TimingEnv + "=1"}
	cmd.Stdin = bytes.NewReader(state)
	var se bytes.Buffer
	cmd.Stderr = &se
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), se.String()
	} else if err != nil {
		t.Fatal(err)
	}
	return 0, se.String()
}

// TestApplyPaths: what pre-start writes is applied over netlink; text the
// strict parser does not recognise still works, through nft -f; either
// way a leftover table (here one with an extra accepting chain) is
// replaced, not merged into, and the result enforces.
func TestApplyPaths(t *testing.T) {
	tp := newTopo(t)
	good, _, err := baseScript().Render()
	if err != nil {
		t.Fatal(err)
	}
	// Host-side resolution (static tiers) adds learned elements, and pasta
	// adds the host-loopback rules.
	learnedPasta := baseScript()
	learnedPasta.Learned = []string{otherV6}
	learnedPasta.HostLoopback = ruleset.PastaHostLoopback
	learned, skipped, err := learnedPasta.Render()
	if err != nil || len(skipped) > 0 {
		t.Fatal(err, skipped)
	}
	tests := []struct {
		name, text, path string
	}{
		{"generated", good, "apply_(netlink)"},
		{"generated with learned elements, pasta", learned, "apply_(netlink)"},
		{"foreign comment", "# written by another tool\n" + good, "apply_(nft_-f)"},
		{"foreign element syntax", good + "add element inet terok_shield allow_v4 { 198.51.100.200 }\n", "apply_(nft_-f)"},
	}
	for _, tc := range tests {
		for _, leftover := range []bool{false, true} {
			name := tc.name
			if leftover {
				name += " over leftover table"
			}
			t.Run(name, func(t *testing.T) {
				_, _ = tp.nft("delete", "table", "inet", "terok_shield")
				if leftover {
					if _, err := tp.nftStdin("table inet terok_shield {\n chain sneaky {\n  type filter hook output priority -10; policy accept;\n  accept\n }\n set extra { type ipv4_addr; }\n}\n", "-f", "-"); err != nil {
						t.Fatal(err)
					}
				}
				dir := stateDir(t)
				writeFile(t, dir, shieldbundle.FileRuleset, tc.text)
				code, stderr := runHookTimed(t, ociState(tp.pid, dir, curVer()))
				if code != 0 {
					t.Fatalf("hook failed: %s", stderr)
				}
				if !strings.Contains(stderr, tc.path+"=") {
					t.Fatalf("want path %s, timing line: %s", tc.path, stderr)
				}
				listing, err := tp.nft("list", "table", "inet", "terok_shield")
				if err != nil {
					t.Fatal(err)
				}
				if st := ruleset.Classify(listing); st != ruleset.StateUp || strings.Contains(listing, "sneaky") || strings.Contains(listing, "set extra") {
					t.Fatalf("state %s:\n%s", st, listing)
				}
				if !strings.Contains(listing, "10.0.2.2") && !strings.Contains(listing, gwV4) {
					t.Fatalf("discovered gateway missing:\n%s", listing)
				}
				tp.mustReach("allowlisted v4", tp.tcp(allowV4, appPort))
				tp.mustReject("unlisted v4", tp.tcp(otherV4, appPort))
				tp.mustReach("service port on v4 gateway", tp.tcp(gwV4, svcPort))
				if tc.text == learned {
					tp.mustReach("learned v6", tp.tcp(otherV6, appPort))
				}
				if log := readFile(t, filepath.Join(dir, shieldbundle.FileHookErrorLog)); log != "" {
					t.Fatalf("error log: %s", log)
				}
			})
		}
	}
}

// TestGeneratedBypassRefused: a ruleset.nft that parses (the generator's
// bypass table) but does not enforce is refused before anything is applied.
func TestGeneratedBypassRefused(t *testing.T) {
	tp := newTopo(t)
	_, _ = tp.nft("delete", "table", "inet", "terok_shield")
	s := baseScript()
	s.Bypass = true
	text, _, err := s.Render()
	if err != nil {
		t.Fatal(err)
	}
	dir := stateDir(t)
	writeFile(t, dir, shieldbundle.FileRuleset, text)
	code, stderr := runHookTimed(t, ociState(tp.pid, dir, curVer()))
	if code == 0 || !strings.Contains(stderr, "Ruleset verification failed") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if out, _ := tp.nft("list", "tables"); strings.Contains(out, "terok_shield") {
		t.Fatalf("a table was applied: %s", out)
	}
}

// nftStdin runs nft in the container netns with a script on stdin.
func (tp *topo) nftStdin(script string, args ...string) (string, error) {
	return tp.ctrNS.Run(context.Background(), []byte(script), append([]string{"nft"}, args...)...)
}
