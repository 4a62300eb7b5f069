package sandbox

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"terok.dev/sandbox/common/taskend"
)

// startSandbox is a bypass sandbox (no hook confirms the start) whose
// scripted podman runs with runBody and reports pid as the container's
// init in `container inspect`.
func startSandbox(t *testing.T, runBody string, pid int) *Sandbox {
	t.Helper()
	cfg, env := coreTestConfig(t)
	env.EUID = 1000
	cfg.ShieldBypass = true
	dir := t.TempDir()
	script := "#!/bin/sh\ncase \"$1\" in\n" +
		"info) echo '{\"host\":{\"rootlessNetworkCmd\":\"slirp4netns\"}}';;\n" +
		"run) " + runBody + ";;\n" +
		"container) echo '[{\"Id\":\"4f2c9a0b1c2d3e\",\"State\":{\"Status\":\"running\",\"Running\":true,\"Pid\":" + strconv.Itoa(pid) + "}}]';;\nesac\n"
	bin := filepath.Join(dir, "podman")
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return New(cfg, Options{Env: env, Stdout: &bytes.Buffer{}, Podman: bin})
}

// A launch without the hook: Run claims the start, then hands the tokens
// to the process podman reports (docs/security-model.md, Tokens that die
// with their task); when that process ends, a token bound before is gone.
func TestRunConfirmsStartWithoutHook(t *testing.T) {
	init := exec.Command("sleep", "600")
	if err := init.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = init.Process.Kill(); _ = init.Wait() })
	s := startSandbox(t, "echo 4f2c9a0b1c2d3e", init.Process.Pid)
	// The runner marks the directory before it binds a token.
	if err := taskend.MarkStarts(s.Config().TaskEndsDir()); err != nil {
		t.Fatal(err)
	}
	bound := time.Now()
	if _, err := s.Run(context.Background(), RunSpec{ContainerName: "p-t1", Image: "i", TaskDir: t.TempDir()}, LifecycleHooks{}); err != nil {
		t.Fatal(err)
	}
	dir := s.Config().TaskEndsDir()
	st, err := taskend.ReadStart(dir, "p-t1")
	if err != nil || st.Phase != taskend.PhaseRunning || st.PID != init.Process.Pid || st.ID != "4f2c9a0b1c2d" {
		t.Fatalf("start record %+v %v", st, err)
	}
	w := taskend.NewWatcher(dir, nil)
	defer w.Close()
	if _, gone := w.Gone("p-t1", bound); gone {
		t.Fatal("gone while the container's process runs")
	}
	_ = init.Process.Kill()
	_ = init.Wait()
	if e, gone := w.Gone("p-t1", bound); !gone || e.Reason != taskend.ReasonProcessGone {
		t.Fatalf("after the process ended: %+v %v", e, gone)
	}
}

// A failed start gives its claim back: the tokens are pending (their
// lease) rather than held by this process.
func TestRunFailedStartReleasesClaim(t *testing.T) {
	s := startSandbox(t, "echo boom >&2; exit 125", 1)
	if _, err := s.Run(context.Background(), RunSpec{ContainerName: "p-t1", Image: "i", TaskDir: t.TempDir()}, LifecycleHooks{}); err == nil {
		t.Fatal("a failed podman run succeeded")
	}
	if st, err := taskend.ReadStart(s.Config().TaskEndsDir(), "p-t1"); err == nil {
		t.Fatalf("claim left after a failed start: %+v", st)
	}
}
