// Package integration runs the real terok-sandbox binary, with the real
// daemons next to it, in isolated roots and without podman: the proxy,
// credentials, doctor, audit and completion commands end to end
// (docs/testing.md, Where tests live). What needs podman is in runner/e2e.
package integration

import (
	"os"
	"testing"

	"terok.dev/sandbox/common/testkit"
)

// TestMain: these tests start the project's binaries; testkit.Run gives
// them fresh roots and fails the run if one wrote under a default root
// (docs/testing.md, Shared test helpers).
func TestMain(m *testing.M) { os.Exit(testkit.Run(m)) }
