package cli

import ucli "github.com/urfave/cli/v2"

// runtimeCommands are run, logs, wait, stop, state, ps, free-port.
func runtimeCommands(d Deps) []*ucli.Command { return nil }

// doctorCommand is runner.md §8.3.
func doctorCommand(d Deps) *ucli.Command {
	return &ucli.Command{Name: "doctor", Usage: "check host services (not built yet)",
		Action: func(*ucli.Context) error { return ExitWith(ExitError, "doctor: not built yet") }}
}
