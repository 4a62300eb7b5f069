package cli

import (
	"fmt"

	ucli "github.com/urfave/cli/v2"

	"terok.dev/sandbox/runner/internal/daemonctl"
	"terok.dev/sandbox/runner/internal/doctor"
	"terok.dev/sandbox/runner/internal/hostsetup"
	"terok.dev/sandbox/runner/internal/shield"
)

// setupCommands are `terok-sandbox setup` and `uninstall`
// (docs/operations.md, Set up a host in one call).
func setupCommands(d Deps) []*ucli.Command {
	scopeFlags := func() []ucli.Flag {
		return []ucli.Flag{
			&ucli.BoolFlag{Name: "user", Usage: "for your rootless podman: user hooks, user units (default when not root)"},
			&ucli.BoolFlag{Name: "system", Usage: "for root's podman: system hooks, system units where root's systemd runs, else PID-file daemons (default as root)"},
			&ucli.BoolFlag{Name: "dry-run", Usage: "print what would change and change nothing"},
		}
	}
	return []*ucli.Command{
		{
			Name:   "setup",
			Usage:  "set this host up in one call (directories, config, shield hooks, seccomp profile, daemons), then run doctor; idempotent",
			Flags:  scopeFlags(),
			Action: func(c *ucli.Context) error { return runSetup(c, d) },
		},
		{
			Name:   "uninstall",
			Usage:  "undo setup (--purge also removes the state: tokens, mirrors, keys, credentials)",
			Flags:  append(scopeFlags(), &ucli.BoolFlag{Name: "purge", Usage: "also remove the state and credentials directories"}),
			Action: func(c *ucli.Context) error { return runUninstall(c, d) },
		},
	}
}

// setupOptions builds the options shared by setup and uninstall.
func setupOptions(c *ucli.Context, d Deps) (hostsetup.Options, hostsetup.DaemonManagers, error) {
	if c.Args().Present() {
		return hostsetup.Options{}, hostsetup.DaemonManagers{}, UsageErrorf("%s takes no arguments", c.Command.Name)
	}
	scope, err := hostsetup.ChooseScope(c.Bool("user"), c.Bool("system"), d.Env.EUID)
	if err != nil {
		return hostsetup.Options{}, hostsetup.DaemonManagers{}, UsageErrorf("%v", err)
	}
	cfg, err := loadConfig(c, d)
	if err != nil {
		return hostsetup.Options{}, hostsetup.DaemonManagers{}, err
	}
	get := func(k string) string {
		if d.Env.Getenv == nil {
			return ""
		}
		return d.Env.Getenv(k)
	}
	hook, _ := daemonctl.FindBinary("terok-shield-hook")
	o := hostsetup.Options{
		Cfg: cfg, Env: d.Env, Scope: scope,
		Paths:      shield.DefaultHostPaths(d.Env.Home, get("XDG_CONFIG_HOME"), get("CONTAINERS_CONF"), d.Env.EUID == 0),
		Tools:      shield.Tools{Path: get("PATH")},
		HookBinary: hook,
		Out:        d.Stdout,
	}
	return o, hostsetup.NewDaemonManagers(cfg, d.Env, d.Log), nil
}

func runSetup(c *ucli.Context, d Deps) error {
	o, mgrs, err := setupOptions(c, d)
	if err != nil {
		return err
	}
	if err := hostsetup.Preflight(o.Tools, d.Env.EUID); err != nil {
		return err
	}
	o.Daemons = mgrs.Daemons(c.Context, o.Scope)
	dry := c.Bool("dry-run")
	res, err := hostsetup.Run(c.Context, o.Steps(), dry, d.Stdout)
	if err != nil {
		return fmt.Errorf("setup stopped (run it again once fixed; it resumes where it stopped): %w", err)
	}
	switch {
	case dry:
		fmt.Fprintf(d.Stdout, "Dry run: %d step(s) would change; nothing was changed.\n", res.Changed)
		return nil
	case res.Changed == 0:
		fmt.Fprintln(d.Stdout, "Setup: nothing to do; the host is set up.")
	default:
		fmt.Fprintf(d.Stdout, "Setup: %d step(s) changed.\n", res.Changed)
	}
	for _, p := range mgrs.WaitServices(c.Context, o.Scope) {
		fmt.Fprintf(d.Stdout, "services: %s\n", p)
	}
	// doctor's verdict is setup's exit status: a host that is set up but
	// whose services do not answer is not set up.
	fmt.Fprintln(d.Stdout, "\nDoctor:")
	checks := doctor.StandaloneChecks(o.Cfg, d.Env.EUID)
	results := doctor.RunStandalone(c.Context, checks, doctor.ProbeTimeout)
	doctor.Format(d.Stdout, results)
	if code := doctor.ExitCode(results); code != 0 {
		return ExitWith(code, "setup finished, but doctor reports problems (above)")
	}
	return nil
}

func runUninstall(c *ucli.Context, d Deps) error {
	o, mgrs, err := setupOptions(c, d)
	if err != nil {
		return err
	}
	dry := c.Bool("dry-run")
	steps := o.UninstallSteps(mgrs.RemovalDaemons(c.Context, o.Scope), c.Bool("purge"))
	res, err := hostsetup.Run(c.Context, steps, dry, d.Stdout)
	if err != nil {
		return fmt.Errorf("uninstall stopped (run it again once fixed): %w", err)
	}
	switch {
	case dry:
		fmt.Fprintf(d.Stdout, "Dry run: %d step(s) would change; nothing was changed.\n", res.Changed)
	case res.Changed == 0:
		fmt.Fprintln(d.Stdout, "Uninstall: nothing to do.")
	default:
		fmt.Fprintf(d.Stdout, "Uninstall: %d step(s) changed.\n", res.Changed)
	}
	return nil
}
