//go:build e2e

// Package e2e holds the real-podman end-to-end tests (build tag e2e, run by
// `make e2e` as root). Each component's engineer owns <component>_test.go;
// all share the harness prepared here.
package e2e

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"terok.dev/sandbox/runner/internal/testharness"
)

// harness is prepared once by TestMain and read-only afterwards.
var harness *testharness.Env

// H returns the prepared harness.
func H(t testing.TB) *testharness.Env {
	t.Helper()
	if harness == nil {
		t.Fatal("e2e harness not prepared (TestMain)")
	}
	return harness
}

func TestMain(m *testing.M) {
	if reason := testharness.SkipReason(); reason != "" {
		fmt.Fprintln(os.Stderr, "SKIP e2e:", reason)
		if os.Getenv("CI") != "" {
			// CI runs as root with podman: skipping there would hide a broken setup.
			fmt.Fprintln(os.Stderr, "FAIL: CI is set, e2e tests must run")
			os.Exit(1)
		}
		os.Exit(0)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	env, err := testharness.Prepare(ctx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e harness:", err)
		os.Exit(1)
	}
	harness = env
	os.Exit(m.Run())
}
