//go:build e2e

package sandbox_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/runner/sandbox"
	"terok.dev/sandbox/runner/shield"
)

// The main flow of an orchestrator (docs/library.md, Embedding): a task's
// container launched behind the shield with a gate token (its clone URL)
// and a phantom token, its logs streamed until it is ready, its exit
// awaited, its tokens revoked and the container removed. It runs for real
// in `make e2e` (build tag e2e, root, real podman) on a host that
// TestMain sets up as an installation would be: the shield's hooks, the
// gate running with the project "demo" mirrored, the agent image.
func Example_launch() {
	ctx := context.Background()
	env := config.FromOS()
	cfg, err := config.Load(env, "")
	if err != nil {
		fmt.Println(err)
		return
	}
	// The podman command line and the task's logs go to stderr.
	sb := sandbox.New(cfg, sandbox.Options{Env: env, Log: slog.Default(), Stdout: os.Stderr})
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

	_, err = sb.Run(ctx, sandbox.RunSpec{
		ContainerName: name, Image: "localhost/terok-example-agent",
		TaskDir: filepath.Join(cfg.StateDir, "tasks", name),
		Project: task.Project, Task: task.Task,
		Env: []sandbox.EnvVar{{Name: "CODE_REPO", Value: cloneURL}, {Name: "ANTHROPIC_API_KEY", Value: phantom}},
		// The agent's start: clone through the gate, then say it is ready.
		Command: []string{"sh", "-c", `cd /tmp && HOME=/tmp git clone -q "$CODE_REPO" demo && echo "` + sandbox.ReadyMarker + `"`},
	}, sandbox.LifecycleHooks{})
	var setup *shield.SetupNeededError
	if errors.As(err, &setup) { // never started without the firewall
		fmt.Println("install the shield's hooks first: terok-sandbox shield setup")
		return
	}
	if err != nil { // sandbox.LaunchError, GpuConfigError, …
		fmt.Println(err)
		return
	}

	if sb.StreamLogs(ctx, name, 2*time.Minute, nil) { // until sandbox.ReadyMarker
		fmt.Println("ready")
	}
	fmt.Println("exit", sb.WaitForExit(ctx, name, 2*time.Minute)) // sandbox.ExitTimeout on a timeout

	if _, err := sb.RevokePhantomTokens(ctx, task); err != nil {
		fmt.Println(err)
	}
	if _, err := sb.RevokeToken(task); err != nil {
		fmt.Println(err)
	}
	sb.Stop(ctx, []string{name})
	// Output:
	// ready
	// exit 0
}
