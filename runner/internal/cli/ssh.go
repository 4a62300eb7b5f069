package cli

import ucli "github.com/urfave/cli/v2"

// sshCommand is filled in by the ssh issue; until then it refuses loudly.
func sshCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:  "ssh",
		Usage: "ssh management (not built yet)",
		Action: func(*ucli.Context) error {
			return ExitWith(ExitError, "terok-sandbox ssh: not built yet")
		},
	}
}
