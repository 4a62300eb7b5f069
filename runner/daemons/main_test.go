package daemons

import (
	"os"
	"testing"

	"terok.dev/sandbox/common/testkit"
)

// TestMain: these tests start the project's binaries; testkit.Run gives
// them fresh roots and fails the run if one wrote under a default root
// (docs/testing.md, Shared test helpers).
func TestMain(m *testing.M) { os.Exit(testkit.Run(m)) }
