package cli

import ucli "github.com/urfave/cli/v2"

// proxyCommand is filled in by the proxy issue; until then it refuses loudly.
func proxyCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:  "proxy",
		Usage: "proxy management (not built yet)",
		Action: func(*ucli.Context) error {
			return ExitWith(ExitError, "terok-sandbox proxy: not built yet")
		},
	}
}
