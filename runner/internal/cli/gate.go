package cli

import ucli "github.com/urfave/cli/v2"

// gateCommand is filled in by the gate issue; until then it refuses loudly.
func gateCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:  "gate",
		Usage: "gate management (not built yet)",
		Action: func(*ucli.Context) error {
			return ExitWith(ExitError, "terok-sandbox gate: not built yet")
		},
	}
}
