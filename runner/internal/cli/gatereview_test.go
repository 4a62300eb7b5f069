package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/common/testkit"
	"terok.dev/sandbox/runner/internal/mirror"
)

// TestGateReviewPromoteReject: a task pushes through the real gate daemon,
// the operator reviews, promotes and rejects (docs/gate.md, Push review).
func TestGateReviewPromoteReject(t *testing.T) {
	g := newGateCLI(t)
	port := testkit.FreePort(t)
	if code, _, errOut := g.run("gate", "start", "--daemon", "--port", strconv.Itoa(port)); code != 0 {
		t.Fatalf("start: %q", errOut)
	}
	t.Cleanup(func() {
		data, _ := os.ReadFile(filepath.Join(g.dir, "run", "gate-server.pid"))
		if pid, _ := strconv.Atoi(strings.TrimSpace(string(data))); pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	gitEnv := append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+g.dir, "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@x.invalid",
		"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@x.invalid")
	git := func(args ...string) string {
		t.Helper()
		c := exec.Command("git", args...)
		c.Env = gitEnv
		b, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v %s", args, err, b)
		}
		return strings.TrimSpace(string(b))
	}
	up := filepath.Join(g.dir, "up.git")
	src := filepath.Join(g.dir, "src")
	git("init", "-q", "-b", "main", src)
	git("-C", src, "commit", "-q", "--allow-empty", "-m", "first")
	git("clone", "-q", "--bare", src, up)
	if code, _, errOut := g.run("gate", "sync", "--upstream", up, "proj"); code != 0 {
		t.Fatalf("sync: %q", errOut)
	}
	_, tok, _ := g.run("gate", "token", "create", "proj", "7")
	work := filepath.Join(g.dir, "work")
	git("clone", "-q", fmt.Sprintf("http://%s@127.0.0.1:%d/proj.git", strings.TrimSpace(tok), port), work)
	os.WriteFile(filepath.Join(work, "a.txt"), []byte("one\ntwo\n"), 0o644)
	git("-C", work, "add", ".")
	git("-C", work, "commit", "-q", "-m", "task work")
	git("-C", work, "push", "-q", "origin", "HEAD:refs/heads/terok/7/fix", "HEAD:refs/heads/terok/7/other")
	fix := git("-C", work, "rev-parse", "HEAD")

	code, out, errOut := g.run("gate", "review", "proj", "--json")
	var list []mirror.Pushed
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list) != 2 {
		t.Fatalf("review: %d %q %q", code, out, errOut)
	}
	p := list[0]
	if p.Ref != "refs/heads/terok/7/fix" || p.ID != fix || p.Task != "7" || p.Commits != 1 || p.FilesChanged != 1 || p.Insertions != 2 ||
		!strings.HasPrefix(p.TokenPrefix, "terok-g-") || p.PushedAt == "" {
		t.Fatalf("review entry %+v", p)
	}
	if _, out, _ := g.run("gate", "review", "proj", "--task", "8"); !strings.Contains(out, "Nothing to review") {
		t.Fatalf("review --task 8: %q", out)
	}
	if _, out, _ := g.run("gate", "review", "proj"); !strings.Contains(out, "terok/7/fix") || !strings.Contains(out, "1 files +2 -0") {
		t.Fatalf("review table: %q", out)
	}

	// Promote the fix to upstream main (a fast-forward).
	if code, out, errOut := g.run("gate", "promote", "proj", "terok/7/fix", "--to", "main"); code != 0 || !strings.Contains(out, "Promoted refs/heads/terok/7/fix") {
		t.Fatalf("promote: %d %q %q", code, out, errOut)
	}
	if got := git("-C", up, "rev-parse", "refs/heads/main"); got != fix {
		t.Fatalf("upstream main %s, want %s", got, fix)
	}
	// Both refs' commits are upstream now: nothing left to review.
	if _, out, _ := g.run("gate", "review", "proj"); !strings.Contains(out, "Nothing to review") {
		t.Fatalf("review after promote: %q", out)
	}
	// A non-fast-forward promotion needs --force.
	git("-C", src, "commit", "-q", "--allow-empty", "-m", "unrelated")
	git("-C", src, "push", "-q", "--force", up, "main:refs/heads/side")
	git("-C", work, "push", "-q", "origin", "HEAD:refs/heads/terok/7/side")
	if code, _, errOut := g.run("gate", "promote", "proj", "terok/7/side", "--to", "side"); code != 1 || !strings.Contains(errOut, "--force") {
		t.Fatalf("non-ff promote: %d %q", code, errOut)
	}
	if code, _, errOut := g.run("gate", "promote", "proj", "terok/7/side", "--to", "side", "--force"); code != 0 {
		t.Fatalf("forced promote: %d %q", code, errOut)
	}
	// Reject deletes from the mirror only; the default branch is refused.
	if code, out, errOut := g.run("gate", "reject", "proj", "terok/7/other"); code != 0 || !strings.Contains(out, "Rejected refs/heads/terok/7/other") {
		t.Fatalf("reject: %d %q %q", code, out, errOut)
	}
	mirrorDir := filepath.Join(g.dir, "state", "gate", "proj.git")
	if c := exec.Command("git", "-C", mirrorDir, "rev-parse", "-q", "--verify", "refs/heads/terok/7/other"); c.Run() == nil {
		t.Fatal("rejected ref still in the mirror")
	}
	if code, _, errOut := g.run("gate", "reject", "proj", "main"); code != 1 || !strings.Contains(errOut, "default branch") {
		t.Fatalf("reject main: %d %q", code, errOut)
	}
	for _, args := range [][]string{{"gate", "promote", "proj"}, {"gate", "promote", "proj", "a..b"}, {"gate", "reject", "proj", "x", "y"},
		{"gate", "promote", "proj", "x", "--to", "a b"}} {
		if code, _, errOut := g.run(args...); code != 2 || !strings.Contains(errOut, "e.g.") {
			t.Errorf("%v: %d %q, want 2 with an example", args, code, errOut)
		}
	}
	// Every action is in the gate's audit file.
	recs, err := audit.ReadFile(filepath.Join(g.dir, "state", "audit", "gate.jsonl"), nil)
	if err != nil {
		t.Fatal(err)
	}
	var ops []string
	for _, r := range recs {
		if r.Fields["operator"] == true {
			ops = append(ops, r.Event+" "+r.Outcome)
		}
	}
	if got := strings.Join(ops, ","); got != "promote ok,promote error,promote ok,reject ok,reject error" {
		t.Fatalf("operator records: %s", got)
	}
}
