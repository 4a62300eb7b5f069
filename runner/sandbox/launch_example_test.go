package sandbox_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/runner/sandbox"
	"terok.dev/sandbox/runner/shield"
)

// The main flow of an orchestrator (docs/library.md, Embedding): a task's
// container launched behind the shield with a gate token (its clone URL)
// and a phantom token, its logs streamed until it is ready, its exit
// awaited, its tokens revoked and the container removed. It needs podman,
// the shield's global hooks and a running gate, so it is compiled here and
// not run; ExampleSandbox_CreatePhantomToken runs the token half.
func Example_launch() {
	ctx := context.Background()
	env := config.FromOS()
	cfg, err := config.Load(env, "")
	if err != nil {
		fmt.Println(err)
		return
	}
	sb := sandbox.New(cfg, sandbox.Options{Env: env, Log: slog.Default()})
	if err := sb.EnsureGate(ctx); err != nil { // never starts the gate itself
		fmt.Println(err)
		return
	}
	task := sandbox.TaskRef{Project: "demo", Task: "t1"}
	name := "demo-t1"

	gateTok, err := sb.CreateBoundToken(task, name) // dies with the container
	if err != nil {
		fmt.Println(err)
		return
	}
	cloneURL, err := sb.GateURL(filepath.Join(cfg.GateBasePath(), "demo.git"), gateTok)
	if err != nil {
		fmt.Println(err)
		return
	}
	phantom, err := sb.CreatePhantomToken(ctx, sandbox.PhantomTokenSpec{
		Project: task.Project, Task: task.Task, Provider: "claude", Container: name})
	if err != nil {
		fmt.Println(err)
		return
	}

	spec := sandbox.RunSpec{
		ContainerName: name, Image: "terok-l1-cli:ubuntu-24.04",
		TaskDir: filepath.Join(cfg.StateDir, "tasks", name),
		Project: task.Project, Task: task.Task,
		Env: []sandbox.EnvVar{{Name: "CODE_REPO", Value: cloneURL}, {Name: "ANTHROPIC_API_KEY", Value: phantom}},
	}
	_, err = sb.Run(ctx, spec, sandbox.LifecycleHooks{})
	var setup *shield.SetupNeededError
	if errors.As(err, &setup) { // the shield's global hooks are missing: install, launch again
		if _, err = sb.Shield().Setup(ctx, shield.ScopeUser); err == nil {
			_, err = sb.Run(ctx, spec, sandbox.LifecycleHooks{})
		}
	}
	if err != nil { // never started without the firewall (sandbox.LaunchError, GpuConfigError, …)
		fmt.Println(err)
		return
	}

	if sb.StreamLogs(ctx, name, 2*time.Minute, nil) { // until sandbox.ReadyMarker
		fmt.Println("ready")
	}
	code := sb.WaitForExit(ctx, name, 0) // sandbox.ExitTimeout on a timeout
	fmt.Println("exit", code)

	if _, err := sb.RevokePhantomTokens(ctx, task); err != nil {
		fmt.Println(err)
	}
	if _, err := sb.RevokeToken(task); err != nil {
		fmt.Println(err)
	}
	sb.Stop(ctx, []string{name})
}
