// Package cli is the terok-sandbox command tree (docs/runner.md, CLI). Each command
// group lives in its own file; this file builds the app and owns the exit
// code rules: no command → help and 1, group without subcommand → its help
// and 0, usage error → 2, command error → message on stderr and 1.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	ucli "github.com/urfave/cli/v2"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/common/version"
	"terok.dev/sandbox/runner/internal/launch"
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
	ctx := context.Background()
	if d.Env.Getenv != nil && d.Env.Getenv(launch.TimingEnv) != "" {
		ctx = launch.WithTiming(ctx, launch.NewTiming(d.Stderr))
	}
	err := app.RunContext(ctx, reorderArgs(app, args))
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
		writeUsage(d.Stderr, app, args)
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
		// Without an action urfave treats an unknown first word as a help
		// topic ("No help topic", exit 1); like podman it is a usage error.
		Action: func(c *ucli.Context) error {
			if c.Args().Present() {
				return UsageErrorf("unknown command %q for %q", c.Args().First(), Program)
			}
			return ucli.ShowAppHelp(c)
		},
	}
	app.Commands = append(app.Commands, runtimeCommands(d)...)
	app.Commands = append(app.Commands,
		gateCommand(d),
		proxyCommand(d),
		credentialsCommand(d),
		sshCommand(d),
		shieldCommand(d),
		doctorCommand(d),
		auditCommand(d),
	)
	app.Commands = append(app.Commands, setupCommands(d)...)
	app.Commands = append(app.Commands, completeCommand(d))
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

// writeUsage prints the usage line of the deepest command args name (the
// program's when none) and where the full help is, after a usage error.
func writeUsage(w io.Writer, app *ucli.App, args []string) {
	path := []string{Program}
	var leaf *ucli.Command
	cmds := app.Commands
	for _, a := range args[1:] {
		if isFlagArg(a) {
			continue
		}
		next := findCommand(cmds, a)
		if next == nil {
			break
		}
		leaf, cmds = next, next.Subcommands
		path = append(path, next.Name)
	}
	name := strings.Join(path, " ")
	switch {
	case leaf == nil:
		fmt.Fprintf(w, "Usage: %s [global options] COMMAND [options] [arguments...]\n", name)
	case hasSubcommands(leaf):
		fmt.Fprintf(w, "Usage: %s COMMAND [options] [arguments...]\n", name)
	default:
		fmt.Fprintf(w, "Usage: %s [options] %s\n", name, leaf.ArgsUsage)
	}
	fmt.Fprintf(w, "Run '%s --help' for more information.\n", name)
}

// quietFlag turns off the progress of a long operation.
func quietFlag() ucli.Flag {
	return &ucli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress output (it is shown only when stderr is a terminal)"}
}

// progressWriter is where a long operation shows git's or podman's own
// progress: stderr when want is true and stderr is a terminal, else nil
// (off a terminal a meter would only litter logs).
func progressWriter(d Deps, want bool) io.Writer {
	if !want {
		return nil
	}
	if f, ok := d.Stderr.(*os.File); !ok || !isTerminal(f) {
		return nil
	}
	return d.Stderr
}

// hasSubcommands ignores the help subcommand urfave adds while running.
func hasSubcommands(c *ucli.Command) bool {
	for _, s := range c.Subcommands {
		if s.Name != "help" {
			return true
		}
	}
	return false
}

// loadConfig builds the configuration for a command: defaults, the config
// file, the environment. Commands apply their own flag overrides and call
// Validate again.
func loadConfig(c *ucli.Context, d Deps) (config.Config, error) {
	return config.Load(d.Env, c.String("config"))
}

// rawArgsCommands take everything after their first positional argument
// verbatim (`run … IMAGE-COMMAND -c 'x'`): their arguments are never
// reordered.
func rawArgsCommands() map[string]bool { return map[string]bool{"run": true} }

// reorderArgs moves the leaf command's flags that follow positional
// arguments in front of them (urfave/cli v2 stops parsing flags at the first
// positional, so `gate sync demo --upstream X` would otherwise fail). A
// literal "--" ends the reordering: it and everything after it stay as they
// are. Which flags take a value comes from the leaf command's definitions;
// unknown flags are moved alone (and then rejected by the parser as usage
// errors, not silently taken as positionals).
func reorderArgs(app *ucli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	out := []string{args[0]}
	i := 1
	// Global flags, then command names down to the leaf; each level's own
	// flags may sit before the next name.
	flags, cmds := app.Flags, app.Commands
	var leaf *ucli.Command
	for i < len(args) {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		if isFlagArg(a) {
			out = append(out, a)
			if takesValue(flags, a) && i+1 < len(args) {
				out = append(out, args[i+1])
				i++
			}
			i++
			continue
		}
		next := findCommand(cmds, a)
		if next == nil {
			break
		}
		out = append(out, a)
		i++
		leaf, flags, cmds = next, next.Flags, next.Subcommands
	}
	if leaf == nil || len(leaf.Subcommands) > 0 || rawArgsCommands()[leaf.Name] {
		return append(out, args[i:]...)
	}
	var moved, positional []string
	for i < len(args) {
		a := args[i]
		if a == "--" {
			positional = append(positional, args[i:]...)
			break
		}
		if isFlagArg(a) {
			moved = append(moved, a)
			if takesValue(flags, a) && i+1 < len(args) {
				moved = append(moved, args[i+1])
				i++
			}
		} else {
			positional = append(positional, a)
		}
		i++
	}
	return append(append(out, moved...), positional...)
}

func isFlagArg(a string) bool { return len(a) > 1 && a[0] == '-' }

// takesValue reports whether the flag argument (without "=value") names a
// defined flag that consumes the next argument.
func takesValue(flags []ucli.Flag, arg string) bool {
	if strings.Contains(arg, "=") {
		return false
	}
	name := strings.TrimLeft(arg, "-")
	for _, f := range flags {
		for _, n := range f.Names() {
			if n != name {
				continue
			}
			if tv, ok := f.(interface{ TakesValue() bool }); ok {
				return tv.TakesValue()
			}
			return false
		}
	}
	return false
}

func findCommand(cmds []*ucli.Command, name string) *ucli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}
