// Package cli is the terok-sandbox command tree (runner.md §9). Each command
// group lives in its own file; this file builds the app and owns the exit
// code rules: no command → help and 1, group without subcommand → its help
// and 0, usage error → 2, command error → message on stderr and 1.
package cli

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	ucli "github.com/urfave/cli/v2"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/common/version"
)

// Program is the binary name.
const Program = "terok-sandbox"

// Exit codes.
const (
	ExitOK    = 0
	ExitError = 1
	ExitUsage = 2
)

// Deps is what commands need from the outside world; tests swap them.
type Deps struct {
	Stdout, Stderr io.Writer
	Stdin          io.Reader
	Env            config.Env
	Log            *slog.Logger
}

// usageError marks errors that must exit 2.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

// UsageErrorf builds an error that exits with status 2.
func UsageErrorf(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// exitCoder lets a command choose its exit status (wait returns the
// container's code, doctor 0/1/2) without printing anything more.
type exitCoder struct {
	code int
	msg  string
}

func (e exitCoder) Error() string { return e.msg }

// ExitWith ends the command with code; msg (if any) goes to stderr.
func ExitWith(code int, msg string) error { return exitCoder{code: code, msg: msg} }

// Run executes the command line and returns the process exit status.
func Run(args []string, d Deps) int {
	if d.Stdout == nil {
		d.Stdout = os.Stdout
	}
	if d.Stderr == nil {
		d.Stderr = os.Stderr
	}
	if d.Stdin == nil {
		d.Stdin = os.Stdin
	}
	if d.Log == nil {
		d.Log = slog.New(slog.NewTextHandler(d.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	app := newApp(d)
	if len(args) <= 1 {
		_ = ucli.ShowAppHelp(ucli.NewContext(app, nil, nil))
		return ExitError
	}
	err := app.Run(args)
	if err == nil {
		return ExitOK
	}
	var ec exitCoder
	if errors.As(err, &ec) {
		if ec.msg != "" {
			fmt.Fprintln(d.Stderr, ec.msg)
		}
		return ec.code
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(d.Stderr, "Usage error: %v\n", ue.err)
		return ExitUsage
	}
	fmt.Fprintf(d.Stderr, "Error: %v\n", err)
	return ExitError
}

func newApp(d Deps) *ucli.App {
	ucli.VersionPrinter = func(c *ucli.Context) { fmt.Fprintln(c.App.Writer, version.String(Program)) }
	app := &ucli.App{
		Name:                 Program,
		Usage:                "hardened Podman container runtime with shield firewall and git gate",
		Version:              version.Version,
		Writer:               d.Stdout,
		ErrWriter:            d.Stderr,
		HideHelpCommand:      true,
		EnableBashCompletion: false,
		ExitErrHandler:       func(*ucli.Context, error) {}, // Run decides exit codes
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "config", Usage: "config file (default: <config root>/" + config.FileName + ")", EnvVars: []string{"TEROK_SANDBOX_CONFIG"}},
		},
		OnUsageError: func(c *ucli.Context, err error, _ bool) error { return usageError{err} },
	}
	app.Commands = append(app.Commands, runtimeCommands(d)...)
	app.Commands = append(app.Commands,
		gateCommand(d),
		proxyCommand(d),
		credentialsCommand(d),
		sshCommand(d),
		shieldCommand(d),
		doctorCommand(d),
	)
	setUsageHandlers(app.Commands)
	return app
}

// setUsageHandlers makes flag errors exit 2 and bare groups print their help
// and exit 0 throughout the tree.
func setUsageHandlers(cmds []*ucli.Command) {
	for _, c := range cmds {
		c.OnUsageError = func(_ *ucli.Context, err error, _ bool) error { return usageError{err} }
		if len(c.Subcommands) > 0 && c.Action == nil {
			c.Action = func(ctx *ucli.Context) error {
				if ctx.Args().Present() {
					return UsageErrorf("unknown command %q for %q", ctx.Args().First(), ctx.Command.FullName())
				}
				return ucli.ShowSubcommandHelp(ctx)
			}
		}
		setUsageHandlers(c.Subcommands)
	}
}

// loadConfig builds the configuration for a command: defaults, the config
// file, the environment. Commands apply their own flag overrides and call
// Validate again.
func loadConfig(c *ucli.Context, d Deps) (config.Config, error) {
	return config.Load(d.Env, c.String("config"))
}
