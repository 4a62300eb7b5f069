//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/common/testkit"
	"terok.dev/sandbox/runner/internal/testharness"
)

// Tokens that die with their task (docs/security-model.md): gate tokens
// bound to the containers of three shielded tasks, checked with real git
// through the gate daemon. `terok-sandbox stop` ends one (the runner
// records the end), `podman kill` another (the shield hook's poststop
// records it); both tokens are refused within a few seconds and audited as
// task-gone, while the running task's token keeps working. The ends that
// nobody records: the runner SIGKILLed mid-start (its claim's process is
// gone), conmon SIGKILLed with the container (the init's process is gone,
// no poststop) and a bypass container that exits (no hook at all). Root
// and rootless.
func TestTokensDieWithTask(t *testing.T) {
	H(t).Each(t, func(t *testing.T, r *testharness.Runner) { tokensDieWithTask(t, r) })
}

func tokensDieWithTask(t *testing.T, r *testharness.Runner) {
	ctx := e2eCtx(t)
	shxShieldRunner(t, ctx, r)
	port := testkit.FreePort(t)
	if err := r.WriteConfig("gate_port = " + strconv.Itoa(port) + "\n"); err != nil {
		t.Fatal(err)
	}
	gateMirrored(t, ctx, r, "proj")

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

	// The runner killed mid-start: paused by the test hook point after it
	// claimed the start (docs/testing.md, Test hook points), its token
	// works while it lives and is refused once it is SIGKILLed.
	{
		name := r.Name("td-midstart")
		toks["midstart"] = strings.TrimSpace(mustOK(t, "token create midstart",
			r.Sandbox(ctx, "gate", "token", "create", "proj", "midstart", "--container", name)).Stdout)
		t.Cleanup(func() { r.Sandbox(e2eCtx(t), "stop", name) })
		markDir := filepath.Join(r.Base, "midstart")
		if err := r.Mkdir(markDir, 0o755); err != nil {
			t.Fatal(err)
		}
		marker := filepath.Join(markDir, "runner.pid")
		bin, err := H(t).Bin("terok-sandbox")
		if err != nil {
			t.Fatal(err)
		}
		cmd := r.Command(ctx, bin, "run", "--name", name, "--image", H(t).Image, "--", "sleep", "600")
		cmd.Env = append(cmd.Env, "TEROK_SANDBOX_TEST_PAUSE_AFTER_CLAIM="+marker)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(waited) }()
		t.Cleanup(func() { _ = cmd.Process.Kill(); <-waited })
		pid := waitPIDFile(t, marker, 60*time.Second)
		mustOK(t, "ls-remote while the runner is paused mid-start", lsRemote("midstart"))
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-waited
		t.Logf("runner SIGKILLed mid-start: refused after %v", refused("midstart"))
		if res := r.Podman(ctx, "container", "exists", name); res.Code == 0 {
			t.Fatalf("the paused runner started %s", name)
		}
	}

	// conmon killed together with the container: no poststop runs, so no
	// end is recorded; the container's init process holds the token.
	{
		name := r.Name("td-conmon")
		toks["conmon"] = strings.TrimSpace(mustOK(t, "token create conmon",
			r.Sandbox(ctx, "gate", "token", "create", "proj", "conmon", "--container", name)).Stdout)
		mustOK(t, "run conmon", r.Sandbox(ctx, "run", "--name", name, "--image", H(t).Image, "--", "sleep", "600"))
		t.Cleanup(func() { r.Podman(e2eCtx(t), "rm", "-f", "-t", "0", name) })
		mustOK(t, "ls-remote conmon while it runs", lsRemote("conmon"))
		pids := strings.Fields(mustOK(t, "inspect pids", r.Podman(ctx, "container", "inspect", "--format", "{{.State.ConmonPid}} {{.State.Pid}}", name)).Stdout)
		if len(pids) != 2 {
			t.Fatalf("conmon and init pids: %q", pids)
		}
		for _, p := range pids {
			n, err := strconv.Atoi(p)
			if err != nil || n <= 1 {
				t.Fatalf("pid %q", p)
			}
			if err := syscall.Kill(n, syscall.SIGKILL); err != nil {
				t.Fatalf("kill %d: %v", n, err)
			}
		}
		t.Logf("conmon and the container SIGKILLed: refused after %v", refused("conmon"))
		if _, err := os.Stat(filepath.Join(r.Dirs.State, "task-ends", name+".json")); err == nil {
			t.Fatal("an end was recorded: the test did not exercise the liveness check")
		}
	}
	mustOK(t, "ls-remote of the running task", lsRemote("running"))

	// A bypass launch (no hook): the runner hands the token to the
	// container's init; the container exits, and the token dies with it.
	{
		name := r.Name("td-bypass")
		toks["bypass"] = strings.TrimSpace(mustOK(t, "token create bypass",
			r.Sandbox(ctx, "gate", "token", "create", "proj", "bypass", "--container", name)).Stdout)
		mustOK(t, "run bypass", r.Sandbox(ctx, "run", "--shield-bypass", "--name", name, "--image", H(t).Image, "--",
			"sh", "-c", "while [ ! -e /tmp/exit ]; do sleep 0.1; done; sleep 1"))
		t.Cleanup(func() { r.Podman(e2eCtx(t), "rm", "-f", "-t", "0", name) })
		mustOK(t, "ls-remote bypass while it runs", lsRemote("bypass"))
		// The container exits a second after the file appears, so the exec
		// is not killed with it.
		mustOK(t, "podman exec touch", r.Podman(ctx, "exec", name, "touch", "/tmp/exit"))
		mustOK(t, "podman wait", r.Podman(ctx, "wait", name))
		t.Logf("bypass container exited: refused after %v (from podman wait's return)", refused("bypass"))
	}
	mustOK(t, "ls-remote of the running task", lsRemote("running"))

	recs, err := audit.ReadFile(filepath.Join(r.Dirs.State, "audit", "gate.jsonl"), nil)
	if err != nil {
		t.Fatal(err)
	}
	gone, ends := map[string]string{}, map[string]any{}
	for _, rec := range recs {
		if rec.Reason == "task-gone" {
			gone[rec.Task] = rec.Container
			ends[rec.Task] = rec.Fields["task_end"]
		}
	}
	// podman kill: poststop records exited, but the daemon may see the
	// init's pidfd first (process-gone); both are this end.
	for task, want := range map[string]string{"stopped": "stopped", "killed": "exited process-gone", "midstart": "start-failed", "conmon": "process-gone", "bypass": "process-gone"} {
		if s, _ := ends[task].(string); s == "" || !slices.Contains(strings.Fields(want), s) {
			t.Errorf("task_end of %s: %v, want %s (all: %v)", task, ends[task], want, ends)
		}
	}
	for _, task := range []string{"stopped", "killed", "midstart", "conmon", "bypass"} {
		if gone[task] != r.Name("td-"+task) {
			t.Fatalf("task-gone records by task: %v", gone)
		}
	}
	if gone["running"] != "" {
		t.Fatalf("the running task's token was refused: %v", gone)
	}
}

// waitPIDFile waits for a file holding a PID (written by the test hook
// point) and returns the PID.
func waitPIDFile(t *testing.T, path string, limit time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if data, err := os.ReadFile(path); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && pid > 1 {
				return pid
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not written within %v", path, limit)
	return 0
}
