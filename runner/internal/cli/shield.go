package cli

import ucli "github.com/urfave/cli/v2"

// shieldCommand is filled in by the shield issue; until then it refuses loudly.
func shieldCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:  "shield",
		Usage: "shield management (not built yet)",
		Action: func(*ucli.Context) error {
			return ExitWith(ExitError, "terok-sandbox shield: not built yet")
		},
	}
}
