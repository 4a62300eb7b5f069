//go:build e2e

package e2e

import (
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/runner/internal/testharness"
)

// Tokens that die with their task (docs/security-model.md): gate tokens
// bound to the containers of three shielded tasks, checked with real git
// through the gate daemon. `terok-sandbox stop` ends one (the runner
// records the end), `podman kill` another (the shield hook's poststop
// records it); both tokens are refused within a few seconds and audited as
// task-gone, while the running task's token keeps working. Root and
// rootless.
func TestTokensDieWithTask(t *testing.T) {
	H(t).Each(t, func(t *testing.T, r *testharness.Runner) { tokensDieWithTask(t, r) })
}

func tokensDieWithTask(t *testing.T, r *testharness.Runner) {
	ctx := e2eCtx(t)
	shxShieldRunner(t, ctx, r)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	if err := r.WriteConfig("gate_port = " + strconv.Itoa(port) + "\n"); err != nil {
		t.Fatal(err)
	}
	r.ExtraEnv = append(r.ExtraEnv, "GIT_AUTHOR_NAME=e2e", "GIT_AUTHOR_EMAIL=e2e@example.invalid",
		"GIT_COMMITTER_NAME=e2e", "GIT_COMMITTER_EMAIL=e2e@example.invalid", "GIT_CONFIG_NOSYSTEM=1")
	src := filepath.Join(r.Base, "upstream")
	mustOK(t, "git init", r.Run(ctx, "git", "init", "-q", "-b", "main", src))
	mustOK(t, "git commit", r.Run(ctx, "git", "-C", src, "commit", "-q", "--allow-empty", "-m", "upstream commit"))
	mustOK(t, "gate sync", r.Sandbox(ctx, "gate", "sync", "--upstream", src, "proj"))
	mustOK(t, "gate start", r.Sandbox(ctx, "gate", "start", "--daemon"))
	t.Cleanup(func() { r.Sandbox(e2eCtx(t), "gate", "stop") })

	toks := map[string]string{}
	for _, task := range []string{"stopped", "killed", "running"} {
		name := r.Name("td-" + task)
		toks[task] = strings.TrimSpace(mustOK(t, "token create "+task,
			r.Sandbox(ctx, "gate", "token", "create", "proj", task, "--container", name)).Stdout)
		mustOK(t, "run "+task, r.Sandbox(ctx, "run", "--name", name, "--image", H(t).Image, "--", "sleep", "600"))
		t.Cleanup(func() { r.Podman(e2eCtx(t), "rm", "-f", "-t", "0", name) })
	}
	lsRemote := func(task string) testharness.Result {
		return r.Run(ctx, "git", "ls-remote", "http://"+toks[task]+"@127.0.0.1:"+strconv.Itoa(port)+"/proj.git")
	}
	for task := range toks {
		mustOK(t, "ls-remote "+task+" while it runs", lsRemote(task))
	}
	// Refused within refuseWithin of the end: measured from the command's
	// return, polled every 100 ms.
	const refuseWithin = 5 * time.Second
	refused := func(task string) time.Duration {
		start := time.Now()
		for time.Since(start) < refuseWithin {
			if res := lsRemote(task); res.Code != 0 && strings.Contains(res.Stderr, "403") {
				return time.Since(start)
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("%s: token still works %v after the end", task, refuseWithin)
		return 0
	}
	mustOK(t, "stop", r.Sandbox(ctx, "stop", r.Name("td-stopped")))
	t.Logf("stop: refused after %v", refused("stopped"))
	mustOK(t, "podman kill", r.Podman(ctx, "kill", r.Name("td-killed")))
	t.Logf("podman kill: refused after %v", refused("killed"))
	mustOK(t, "ls-remote of the running task", lsRemote("running"))

	recs, err := audit.ReadFile(filepath.Join(r.Dirs.State, "audit", "gate.jsonl"), nil)
	if err != nil {
		t.Fatal(err)
	}
	gone := map[string]string{}
	for _, rec := range recs {
		if rec.Reason == "task-gone" {
			gone[rec.Task] = rec.Container
		}
	}
	if gone["stopped"] != r.Name("td-stopped") || gone["killed"] != r.Name("td-killed") || gone["running"] != "" {
		t.Fatalf("task-gone records by task: %v", gone)
	}
}
