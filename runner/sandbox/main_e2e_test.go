//go:build e2e

package sandbox_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"terok.dev/sandbox/common/testkit"
	"terok.dev/sandbox/runner/internal/testharness"
)

// TestMain (build tag e2e) prepares the host Example_launch runs on, from
// the e2e harness (docs/testing.md, The e2e harness): a root runner's
// private roots, exported into this process's environment because the
// example reads them from there (config.FromOS), with the test
// containers.conf and TEROK_BIN_DIR, the binaries on PATH; the shield's hooks installed by
// `shield setup`; the gate daemon serving a mirror of the project "demo";
// the harness's test image tagged as the example's agent image. Without
// root or podman it skips like runner/e2e (and fails when CI is set).
// Only Example_launch is meant to run here (`make e2e` passes -run).
func TestMain(m *testing.M) { os.Exit(exampleHost(m)) }

const (
	exampleImage     = "localhost/terok-example-agent"
	exampleContainer = "demo-t1"
)

func exampleHost(m *testing.M) int {
	if reason := testharness.SkipReason(); reason != "" {
		fmt.Fprintln(os.Stderr, "SKIP e2e:", reason)
		if os.Getenv("CI") != "" {
			fmt.Fprintln(os.Stderr, "FAIL: CI is set, e2e tests must run")
			return 1
		}
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	h, err := testharness.Prepare(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e harness:", err)
		return 1
	}
	r, err := h.NewRunner(nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e harness:", err)
		return 1
	}
	defer r.Close()
	stop, err := setUpExampleHost(ctx, h, r)
	defer stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "example host:", err)
		return 1
	}
	return m.Run()
}

// setUpExampleHost does what an installation and an orchestrator's
// project set-up would have done; stop undoes it (also after an error).
func setUpExampleHost(ctx context.Context, h *testharness.Env, r *testharness.Runner) (stop func(), err error) {
	var undo []func()
	stop = func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	must := func(what string, res testharness.Result) error {
		if res.Code != 0 {
			return fmt.Errorf("%s: %s", what, res)
		}
		return nil
	}
	var ports [3]int
	for i := range ports {
		if ports[i], err = testkit.PickPort(); err != nil {
			return stop, err
		}
	}
	if err := r.WriteConfig(fmt.Sprintf("gate_port = %d\nproxy_port = %d\nssh_agent_port = %d\n", ports[0], ports[1], ports[2])); err != nil {
		return stop, err
	}
	if _, err := r.SetupShield(ctx); err != nil {
		return stop, err
	}
	r.ExtraEnv = append(r.ExtraEnv, "GIT_AUTHOR_NAME=example", "GIT_AUTHOR_EMAIL=example@example.invalid",
		"GIT_COMMITTER_NAME=example", "GIT_COMMITTER_EMAIL=example@example.invalid", "GIT_CONFIG_NOSYSTEM=1")
	src := filepath.Join(r.Base, "upstream")
	for _, c := range [][]string{{"init", "-q", "-b", "main", src}, {"-C", src, "commit", "-q", "--allow-empty", "-m", "first"}} {
		if err := must("git", r.Run(ctx, "git", c...)); err != nil {
			return stop, err
		}
	}
	if err := must("gate sync", r.Sandbox(ctx, "gate", "sync", "--upstream", src, "demo")); err != nil {
		return stop, err
	}
	if err := must("gate start", r.Sandbox(ctx, "gate", "start", "--daemon")); err != nil {
		return stop, err
	}
	undo = append(undo, func() { r.Sandbox(context.Background(), "gate", "stop") })
	if err := must("podman tag", r.Podman(ctx, "tag", h.Image, exampleImage)); err != nil {
		return stop, err
	}
	undo = append(undo, func() {
		r.Podman(context.Background(), "rm", "-f", "-t", "0", exampleContainer)
		r.Podman(context.Background(), "untag", exampleImage)
	})
	r.Podman(ctx, "rm", "-f", "-t", "0", exampleContainer) // a leftover of an interrupted run
	// The runner's environment becomes this process's: its roots, the
	// containers.conf naming the hooks directory, TEROK_BIN_DIR; and the
	// binaries are on PATH, where the facade looks for the hook when the
	// program embedding it is not installed next to it.
	if err := os.Setenv("PATH", h.BinDir+string(os.PathListSeparator)+os.Getenv("PATH")); err != nil {
		return stop, err
	}
	for _, kv := range r.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok && (strings.HasPrefix(k, "TEROK_") || strings.HasPrefix(k, "XDG_") || k == "CONTAINERS_CONF") {
			if err := os.Setenv(k, v); err != nil {
				return stop, err
			}
		}
	}
	return stop, nil
}
