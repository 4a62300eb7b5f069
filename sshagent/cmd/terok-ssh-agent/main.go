// Command terok-ssh-agent signs for containers with their project's SSH keys
// without giving them the keys (ssh-agent.md). `terok-ssh-agent bridge` is the
// in-container side. The logic lives in internal/app.
package main

import (
	"os"

	"terok.dev/sandbox/sshagent/internal/app"
)

func main() { os.Exit(app.Main(os.Args)) }
