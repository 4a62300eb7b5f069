// Command terok-sandbox is the runner CLI: hardened podman launches and the
// management of gate, credential proxy, SSH agent and shield.
package main

import (
	"os"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/runner/internal/cli"
)

func main() {
	os.Exit(cli.Run(os.Args, cli.Deps{Env: config.FromOS()}))
}
