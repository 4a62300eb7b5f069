package cli

import ucli "github.com/urfave/cli/v2"

// credentialsCommand is filled in by the credentials issue; until then it refuses loudly.
func credentialsCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:  "credentials",
		Usage: "credentials management (not built yet)",
		Action: func(*ucli.Context) error {
			return ExitWith(ExitError, "terok-sandbox credentials: not built yet")
		},
	}
}
