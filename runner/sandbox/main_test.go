//go:build !e2e

package sandbox

import (
	"os"
	"testing"

	"terok.dev/sandbox/common/testkit"
)

// TestMain: these tests resolve the sandbox's roots; testkit.Run gives
// them fresh ones and fails the run if anything was written under a default
// root (docs/testing.md, Shared test helpers).
func TestMain(m *testing.M) { os.Exit(testkit.Run(m)) }
