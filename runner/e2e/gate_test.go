//go:build e2e

package e2e

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/common/testkit"
	"terok.dev/sandbox/runner/internal/testharness"
)

// A container started with `terok-sandbox run` clones its project through
// the gate daemon at host.containers.internal with its task token, pushes a
// branch that lands in the host mirror, and is refused another project's
// repository; root and rootless.
func TestGateCloneAndPushFromContainer(t *testing.T) {
	H(t).Each(t, func(t *testing.T, r *testharness.Runner) {
		ctx := e2eCtx(t)
		port := testkit.FreePort(t)
		if err := r.WriteConfig("gate_port = " + strconv.Itoa(port) + "\n"); err != nil {
			t.Fatal(err)
		}
		// Upstream repositories, mirrored into the gate base path.
		gateMirrored(t, ctx, r, "proj", "other")
		st := mustOK(t, "gate status", r.Sandbox(ctx, "gate", "status"))
		if !strings.Contains(st.Stdout, "Mode:      daemon") || !strings.Contains(st.Stdout, "Running:   yes") {
			t.Fatalf("gate status: %s", st)
		}
		mustOK(t, "gate ensure", r.Sandbox(ctx, "gate", "ensure"))

		tok := strings.TrimSpace(mustOK(t, "token create", r.Sandbox(ctx, "gate", "token", "create", "proj", "task-1")).Stdout)
		url := strings.TrimSpace(mustOK(t, "gate url", r.Sandbox(ctx, "gate", "url", "--token", tok, "proj")).Stdout)
		want := "http://" + tok + "@host.containers.internal:" + strconv.Itoa(port) + "/proj.git"
		if url != want {
			t.Fatalf("gate url %q, want %q", url, want)
		}
		otherURL := strings.Replace(url, "/proj.git", "/other.git", 1)

		name := r.Name("gate")
		script := `set -u; cd /tmp; export HOME=/tmp GIT_TERMINAL_PROMPT=0
g="git -c user.name=task -c user.email=task@example.invalid"
$g clone -q "$GATE_URL" work || { echo CLONE-FAILED; exit 1; }
cd work; $g commit -q --allow-empty -m "from the container"
$g push -q origin HEAD:refs/heads/from-container && echo PUSH-OK || echo PUSH-FAILED
if $g push origin HEAD:refs/heads/main 2>main.txt; then echo MAIN-PUSHED; else echo MAIN-REFUSED; cat main.txt; fi
cd /tmp
if $g clone -q "$OTHER_URL" other 2>err.txt; then echo OTHER-CLONED; else echo OTHER-REFUSED; cat err.txt; fi
echo '>> init complete'`
		mustOK(t, "run", r.Sandbox(ctx, "run", "--shield-bypass", "--name", name, "--image", H(t).Image,
			"-e", "GATE_URL="+url, "-e", "OTHER_URL="+otherURL, "--", "bash", "-c", script))
		logs := mustOK(t, "logs", r.Sandbox(ctx, "logs", name, "--until-ready", "--timeout", "120"))
		if wait := r.Sandbox(ctx, "wait", name, "--timeout", "120"); wait.Code != 0 {
			t.Fatalf("container exit: %s\nlogs:\n%s", wait, logs.Stdout)
		}
		// The default push policy protects the default branch: git in the
		// container prints the gate's reason (docs/gate.md, Push policy).
		for _, w := range []string{"PUSH-OK", "OTHER-REFUSED", "403", "MAIN-REFUSED", "remote: terok gate: push refused",
			"(protected-ref: refs/heads/main is protected)"} {
			if !strings.Contains(logs.Stdout+logs.Stderr, w) {
				t.Errorf("container output lacks %q:\n%s\n%s", w, logs.Stdout, logs.Stderr)
			}
		}
		if strings.Contains(logs.Stdout, "OTHER-CLONED") || strings.Contains(logs.Stdout, "CLONE-FAILED") || strings.Contains(logs.Stdout, "MAIN-PUSHED") {
			t.Fatalf("container output:\n%s", logs.Stdout)
		}
		mirror := filepath.Join(r.Dirs.State, "gate", "proj.git")
		res := mustOK(t, "mirror rev-parse", r.Run(ctx, "git", "-C", mirror, "log", "-1", "--format=%s", "refs/heads/from-container"))
		if strings.TrimSpace(res.Stdout) != "from the container" {
			t.Fatalf("pushed branch in the mirror: %q", res.Stdout)
		}
		res = mustOK(t, "mirror main", r.Run(ctx, "git", "-C", mirror, "log", "-1", "--format=%s", "refs/heads/main"))
		if strings.TrimSpace(res.Stdout) != "upstream commit" {
			t.Fatalf("the refused push moved main: %q", res.Stdout)
		}
		// The gate's audit records name the task, its pushes and the refusal
		// (docs/audit.md, Channel gate).
		recs, err := audit.ReadFile(filepath.Join(r.Dirs.State, "audit", "gate.jsonl"), nil)
		if err != nil {
			t.Fatal(err)
		}
		var seen []string
		for _, rec := range recs {
			if rec.Task == "task-1" {
				seen = append(seen, rec.Event+" "+rec.Outcome+" "+rec.Reason)
			}
		}
		if got := strings.Join(seen, ","); !strings.Contains(got, "clone ok ,") || !strings.Contains(got, "push ok ,push refused protected-ref") {
			t.Fatalf("task-1's gate records: %s", got)
		}
		// Revoking the token closes the gate for the task.
		mustOK(t, "token revoke", r.Sandbox(ctx, "gate", "token", "revoke", "proj", "task-1"))
		res = r.Run(ctx, "git", "ls-remote", "http://"+tok+"@127.0.0.1:"+strconv.Itoa(port)+"/proj.git")
		if res.Code == 0 || !strings.Contains(res.Stderr, "403") {
			t.Fatalf("revoked token still works: %s", res)
		}
		mustOK(t, "gate stop", r.Sandbox(ctx, "gate", "stop"))
		checkGateAudit(t, ctx, r, tok)
	})
}

// checkGateAudit reads the task's timeline back through `terok-sandbox
// audit` (docs/audit.md, The audit command): the clone, then the push of
// from-container with its ref, then the refusals of the other project and
// of the revoked token, each once in time order; the token only by prefix.
func checkGateAudit(t *testing.T, ctx context.Context, r *testharness.Runner, tok string) {
	t.Helper()
	res := mustOK(t, "audit", r.Sandbox(ctx, "audit", "task-1", "--project", "proj", "--json"))
	if strings.Contains(res.Stdout, tok) {
		t.Fatalf("the gate token is in the audit output:\n%s", res.Stdout)
	}
	at := map[string]int{}
	var prev time.Time
	for i, l := range strings.Split(strings.TrimSpace(res.Stdout), "\n") {
		rec, err := audit.ParseLine([]byte(l))
		if err != nil {
			t.Fatalf("audit line %q: %v", l, err)
		}
		if rec.Time.Before(prev) {
			t.Fatalf("audit output not in time order at %q", l)
		}
		prev = rec.Time
		if rec.Channel != "gate" || rec.Task != "task-1" || rec.Project != "proj" || rec.TokenPrefix != audit.TokenPrefix(tok) {
			t.Fatalf("audit record of another task or with the wrong token prefix: %s", l)
		}
		key := rec.Event + "/" + rec.Outcome + "/" + rec.Reason
		if rec.Outcome == "refused" {
			key = "refused/" + rec.Reason // ls-refs or clone, by how far git got
		}
		if rec.Event == "push" && rec.Outcome == "ok" && strings.Contains(l, `"ref":"refs/heads/from-container"`) {
			key = "push-ref"
		}
		if _, seen := at[key]; !seen {
			at[key] = i
		}
	}
	order := []string{"clone/ok/", "push-ref", "refused/wrong-project", "refused/revoked"}
	for i, k := range order {
		if _, ok := at[k]; !ok {
			t.Fatalf("no %s record in the timeline (have %v):\n%s", k, at, res.Stdout)
		}
		if i > 0 && at[order[i-1]] > at[k] {
			t.Fatalf("%s before %s in the timeline:\n%s", k, order[i-1], res.Stdout)
		}
	}
	sum := mustOK(t, "audit --summary", r.Sandbox(ctx, "audit", "task-1", "--summary"))
	if !strings.Contains(sum.Stdout, "gate revoked") || !strings.Contains(sum.Stdout, "gate proj.git") {
		t.Fatalf("summary:\n%s", sum.Stdout)
	}
}

// gateMirrored gives r's commands a git identity, makes an upstream
// repository with one commit ("upstream commit") under r.Base, mirrors it
// into the gate as each of projects, and starts the gate daemon (stopped
// when the test ends).
func gateMirrored(t *testing.T, ctx context.Context, r *testharness.Runner, projects ...string) {
	t.Helper()
	r.ExtraEnv = append(r.ExtraEnv, "GIT_AUTHOR_NAME=e2e", "GIT_AUTHOR_EMAIL=e2e@example.invalid",
		"GIT_COMMITTER_NAME=e2e", "GIT_COMMITTER_EMAIL=e2e@example.invalid", "GIT_CONFIG_NOSYSTEM=1")
	src := filepath.Join(r.Base, "upstream")
	mustOK(t, "git init", r.Run(ctx, "git", "init", "-q", "-b", "main", src))
	mustOK(t, "git commit", r.Run(ctx, "git", "-C", src, "commit", "-q", "--allow-empty", "-m", "upstream commit"))
	for _, p := range projects {
		mustOK(t, "gate sync "+p, r.Sandbox(ctx, "gate", "sync", "--upstream", src, p))
	}
	mustOK(t, "gate start", r.Sandbox(ctx, "gate", "start", "--daemon"))
	t.Cleanup(func() { r.Sandbox(e2eCtx(t), "gate", "stop") })
}
