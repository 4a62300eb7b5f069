// Command terok-gate serves the host-side bare mirrors to task containers
// over git smart HTTP, one project per token (gate-server.md).
package main

import (
	"os"

	"terok.dev/sandbox/gate/internal/app"
)

func main() {
	os.Exit(app.Main(os.Args[1:], os.Stderr))
}
