package cli

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"terok.dev/sandbox/common/names"
	"text/tabwriter"
	"time"

	ucli "github.com/urfave/cli/v2"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/common/gatetokens"
	"terok.dev/sandbox/common/secretstore"
	"terok.dev/sandbox/common/tokenid"
	"terok.dev/sandbox/runner/daemons"
	"terok.dev/sandbox/runner/internal/mirror"
	"terok.dev/sandbox/runner/sandbox"
)

// gateCommand is `terok-sandbox gate ...` (docs/gate.md, Operating it;
// docs/gate.md, Mirror manager).
func gateCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:  "gate",
		Usage: "git gate server: lifecycle, tokens, mirrors",
		Subcommands: []*ucli.Command{
			gateStartCommand(d), gateStopCommand(d), gateStatusCommand(d),
			gateInstallCommand(d), gateUninstallCommand(d), gateEnsureCommand(d),
			gateTokenCommand(d), gateURLCommand(d),
			gateSyncCommand(d), gateCompareCommand(d), gateLastCommitCommand(d),
			gatePolicyCommand(d), gateReviewCommand(d), gatePromoteCommand(d), gateRejectCommand(d),
		},
	}
}

// portOverride reads --port: the explicit value, else gate_port.
func portOverride(c *ucli.Context, cfg config.Config) (int, error) {
	if !c.IsSet("port") {
		return cfg.GatePort, nil
	}
	p := c.Int("port")
	if p < 1 || p > 65535 {
		return 0, UsageErrorf("--port %d is out of range; use a port between 1 and 65535", p)
	}
	return p, nil
}

func noArgs(c *ucli.Context) error {
	if c.Args().Present() {
		return UsageErrorf("unexpected argument %q", c.Args().First())
	}
	return nil
}

func portFlag() ucli.Flag {
	return &ucli.IntFlag{Name: "port", Usage: "listen port (default: gate_port from the configuration); honoured in systemd and daemon mode"}
}

func gateStartCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:  "start",
		Usage: "start the gate: systemd socket activation when available, else a daemon",
		Flags: []ucli.Flag{portFlag(), &ucli.BoolFlag{Name: "daemon", Usage: "start the detached daemon even when systemd is available"}},
		Action: daemonAction(d, daemons.NewGate, func(c *ucli.Context, cfg config.Config, g *daemons.Gate) (string, error) {
			port, err := portOverride(c, cfg)
			if err != nil {
				return "", err
			}
			mode, err := g.Start(c.Context, daemons.GateStart{Port: port, Daemon: c.Bool("daemon")})
			if err != nil {
				return "", err
			}
			if mode == daemons.ModeSystemd {
				return "Gate server started via systemd socket activation.", nil
			}
			return "Gate server daemon started.", nil
		}),
	}
}

func gateStopCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:  "stop",
		Usage: "stop the gate (remove the systemd units, or stop the daemon)",
		Action: daemonAction(d, daemons.NewGate, func(c *ucli.Context, _ config.Config, g *daemons.Gate) (string, error) {
			switch g.Status(c.Context).Mode {
			case daemons.ModeSystemd:
				return "Gate server systemd units removed.", g.Uninstall(c.Context)
			case daemons.ModeDaemon:
				g.Stop()
				return "Gate server daemon stopped.", nil
			}
			return "Gate server is not running.", nil
		}),
	}
}

func gateStatusCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:  "status",
		Usage: "show how the gate runs",
		Flags: []ucli.Flag{jsonFlag()},
		Action: daemonAction(d, daemons.NewGate, func(c *ucli.Context, cfg config.Config, g *daemons.Gate) (string, error) {
			st := g.Status(c.Context)
			warn := g.UnitsOutdated()
			if c.Bool("json") {
				out := map[string]any{"mode": st.Mode, "running": st.Running, "port": st.Port, "base_path": cfg.GateBasePath()}
				if warn != "" {
					out["warning"] = warn
				}
				return "", writeJSON(d.Stdout, out)
			}
			running := "no"
			if st.Running {
				running = "yes"
			}
			fmt.Fprintf(d.Stdout, "Mode:      %s\nRunning:   %s\nPort:      %d\nBase path: %s\n", st.Mode, running, st.Port, cfg.GateBasePath())
			if warn != "" {
				fmt.Fprintf(d.Stderr, "\nWarning: %s\nRun 'terok-sandbox gate start' to update.\n", warn)
			}
			return "", nil
		}),
	}
}

func gateInstallCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:  "install",
		Usage: "install and start the systemd socket units (version-stamped, base path baked in)",
		Flags: []ucli.Flag{portFlag()},
		Action: daemonAction(d, daemons.NewGate, func(c *ucli.Context, cfg config.Config, g *daemons.Gate) (string, error) {
			port, err := portOverride(c, cfg)
			if err != nil {
				return "", err
			}
			return "Gate server systemd socket installed and started.", g.Install(c.Context, port)
		}),
	}
}

func gateUninstallCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:  "uninstall",
		Usage: "stop and remove the systemd units",
		Action: daemonAction(d, daemons.NewGate, func(c *ucli.Context, _ config.Config, g *daemons.Gate) (string, error) {
			return "Gate server systemd units removed.", g.Uninstall(c.Context)
		}),
	}
}

func gateEnsureCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:  "ensure",
		Usage: "check that the gate is running with current units (what task creation requires)",
		Action: daemonAction(d, daemons.NewGate, func(c *ucli.Context, _ config.Config, g *daemons.Gate) (string, error) {
			return "Gate server is running.", g.Ensure(c.Context)
		}),
	}
}

func gateTokenCommand(d Deps) *ucli.Command {
	store := func(c *ucli.Context) (*gatetokens.Store, error) {
		cfg, err := loadConfig(c, d)
		if err != nil {
			return nil, err
		}
		return gatetokens.NewStore(cfg, d.Log), nil
	}
	twoArgs := func(c *ucli.Context) (string, string, error) {
		if c.NArg() != 2 {
			return "", "", UsageErrorf("expected PROJECT TASK, got %d argument(s)", c.NArg())
		}
		return c.Args().Get(0), c.Args().Get(1), nil
	}
	return &ucli.Command{
		Name:  "token",
		Usage: "per-task gate tokens",
		Subcommands: []*ucli.Command{
			{
				Name:      "create",
				Usage:     "create a token opening PROJECT's repository for TASK; prints the token",
				ArgsUsage: "PROJECT TASK",
				Flags:     []ucli.Flag{tokenTTLFlag(), tokenContainerFlag(), jsonFlag()},
				Action: func(c *ucli.Context) error {
					// Flags may follow PROJECT TASK (gate token create p t --ttl 8h).
					fa := parseArgs(c)
					if len(fa.pos) != 2 {
						return UsageErrorf("expected PROJECT TASK, got %d argument(s) (e.g. gate token create myproj 42 --ttl 8h)", len(fa.pos))
					}
					project, task := fa.pos[0], fa.pos[1]
					if err := checkProjectTask(project, task); err != nil {
						return err
					}
					expires, err := tokenExpiry(fa)
					if err != nil {
						return err
					}
					container, err := containerFlag(fa)
					if err != nil {
						return err
					}
					s, err := store(c)
					if err != nil {
						return err
					}
					if err := markStarts(c, d, container); err != nil {
						return err
					}
					tok, err := s.CreateBound(names.TaskRef{Project: project, Task: task}, container, expires)
					if err != nil {
						return err
					}
					return printToken(d, fa, tok, expires, container, map[string]any{"project": project, "task": task})
				},
			},
			{
				Name:      "revoke",
				Usage:     "revoke every token of PROJECT/TASK",
				ArgsUsage: "PROJECT TASK",
				Flags:     []ucli.Flag{jsonFlag()},
				Action: func(c *ucli.Context) error {
					project, task, err := twoArgs(c)
					if err != nil {
						return err
					}
					s, err := store(c)
					if err != nil {
						return err
					}
					n, err := s.Revoke(names.TaskRef{Project: project, Task: task})
					if err != nil {
						return err
					}
					return printRevoked(d, c.Bool("json"), int64(n), project, task, "token(s)", "gate tokens")
				},
			},
			{
				Name:  "list",
				Usage: "list tokens (shown only by prefix unless --show-tokens)",
				Flags: []ucli.Flag{jsonFlag(), &ucli.BoolFlag{Name: "show-tokens", Usage: "print the full tokens (secrets!)"}},
				Action: func(c *ucli.Context) error {
					if err := noArgs(c); err != nil {
						return err
					}
					s, err := store(c)
					if err != nil {
						return err
					}
					entries, err := s.List()
					if err != nil {
						return err
					}
					show := func(tok string) string {
						if c.Bool("show-tokens") {
							return tok
						}
						return tokenid.Show(tok)
					}
					if c.Bool("json") {
						out := make([]map[string]string, 0, len(entries))
						for _, e := range entries {
							row := map[string]string{"token": show(e.Token), "project": e.Project, "task": e.Task}
							if !e.Expires.IsZero() {
								row["expires"] = e.Expires.UTC().Format(time.RFC3339)
							}
							out = append(out, row)
						}
						return writeJSON(d.Stdout, out)
					}
					if len(entries) == 0 {
						fmt.Fprintln(d.Stdout, "No gate tokens.")
						return nil
					}
					tw := tabwriter.NewWriter(d.Stdout, 0, 0, 2, ' ', 0)
					fmt.Fprintln(tw, "TOKEN\tPROJECT\tTASK\tEXPIRES")
					now := time.Now()
					for _, e := range entries {
						exp := "-"
						if !e.Expires.IsZero() {
							exp = e.Expires.UTC().Format(time.RFC3339)
							if e.Expired(now) {
								exp += " (expired)"
							}
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", show(e.Token), e.Project, e.Task, exp)
					}
					return tw.Flush()
				},
			},
		},
	}
}

func gateURLCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:      "url",
		Usage:     "print the clone URL a container uses for PROJECT (or a repository path inside the base path)",
		ArgsUsage: "PROJECT|REPO_PATH",
		Flags:     []ucli.Flag{&ucli.StringFlag{Name: "token", Usage: "gate token to embed", Required: true}, jsonFlag()},
		Action: func(c *ucli.Context) error {
			if c.NArg() != 1 {
				return UsageErrorf("expected one PROJECT or REPO_PATH argument")
			}
			cfg, err := loadConfig(c, d)
			if err != nil {
				return err
			}
			arg := c.Args().First()
			repo := arg
			if !strings.Contains(arg, "/") {
				if err := checkProject(strings.TrimSuffix(arg, ".git")); err != nil {
					return err
				}
				repo = filepath.Join(cfg.GateBasePath(), strings.TrimSuffix(arg, ".git")+".git")
			}
			u, err := sandbox.GateURL(cfg, repo, sandbox.GateToken(c.String("token")))
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return writeJSON(d.Stdout, map[string]string{"url": u})
			}
			fmt.Fprintln(d.Stdout, u)
			return nil
		},
	}
}

func mirrorFlags() []ucli.Flag {
	return []ucli.Flag{
		&ucli.StringFlag{Name: "upstream", Usage: "upstream git URL"},
		&ucli.StringFlag{Name: "default-branch", Usage: "branch used by compare and last-commit"},
		&ucli.StringFlag{Name: "ssh-key-name", Usage: "project SSH key file name (default id_ed25519_<project>)"},
		&ucli.StringFlag{Name: "ssh-host-dir", Usage: "directory of the project SSH key (default <state>/ssh-keys/<project>)"},
		&ucli.BoolFlag{Name: "allow-host-keys", Usage: "let host-side git use your personal SSH keys and agent when the project has no key"},
		jsonFlag(),
	}
}

func mirrorFor(c *ucli.Context, d Deps, projectArg ...string) (*mirror.Manager, error) {
	var project string
	if len(projectArg) == 1 {
		project = projectArg[0] // checked by the caller
	} else {
		if c.NArg() != 1 {
			return nil, UsageErrorf("expected one PROJECT argument")
		}
		project = c.Args().First()
		if err := checkProject(project); err != nil {
			return nil, err
		}
	}
	cfg, err := loadConfig(c, d)
	if err != nil {
		return nil, err
	}
	hostDir := c.String("ssh-host-dir")
	if hostDir == "" {
		hostDir = filepath.Join(cfg.SSHKeysDir(), project)
	} else {
		hostDir = d.Env.Expand(hostDir)
	}
	var environ []string
	for _, k := range []string{"PATH", "HOME", "LANG", "SSH_AUTH_SOCK", "GIT_EXEC_PATH", "XDG_CONFIG_HOME", "GIT_CONFIG_NOSYSTEM", "GIT_CONFIG_GLOBAL"} {
		if d.Env.Getenv != nil {
			if v := d.Env.Getenv(k); v != "" {
				environ = append(environ, k+"="+v)
			}
		}
	}
	return mirror.New(mirror.Options{
		ProjectID:     project,
		GatePath:      filepath.Join(cfg.GateBasePath(), project+".git"),
		UpstreamURL:   c.String("upstream"),
		DefaultBranch: c.String("default-branch"),
		SSHHostDir:    hostDir,
		SSHKeyName:    c.String("ssh-key-name"),
		AllowHostKeys: c.Bool("allow-host-keys"),
		Environ:       environ,
		Log:           d.Log,
		Vault:         secretstore.OpenVault(cfg.CredentialsDir),
		Progress:      progressWriter(d, c.Command.Name == "sync" && !c.Bool("quiet")),
	}), nil
}

func gateSyncCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:      "sync",
		Usage:     "create or update PROJECT's gate mirror from --upstream (all branches, or only --branch ones)",
		ArgsUsage: "PROJECT",
		Flags: append(mirrorFlags(),
			&ucli.StringSliceFlag{Name: "branch", Usage: "fetch only this branch (repeatable); keeps unreviewed task branches"},
			&ucli.BoolFlag{Name: "force-reinit", Usage: "delete and re-clone the mirror"},
			quietFlag()),
		Action: func(c *ucli.Context) error {
			m, err := mirrorFor(c, d)
			if err != nil {
				return err
			}
			res, err := m.Sync(c.Context, c.StringSlice("branch"), c.Bool("force-reinit"))
			if err != nil {
				return err
			}
			if c.Bool("json") {
				if err := writeJSON(d.Stdout, res); err != nil {
					return err
				}
			} else {
				verb := "Updated"
				if res.Created {
					verb = "Created"
				}
				if res.Success {
					fmt.Fprintf(d.Stdout, "%s gate mirror %s (branches: %s).\n", verb, res.Path, strings.Join(res.UpdatedBranches, ", "))
				}
			}
			if !res.Success {
				return fmt.Errorf("sync of %s failed: %s", res.Path, strings.Join(res.Errors, "; "))
			}
			return nil
		},
	}
}

func gateCompareCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:      "compare",
		Usage:     "compare PROJECT's gate mirror with --upstream for --branch (or --default-branch)",
		ArgsUsage: "PROJECT",
		Flags:     append(mirrorFlags(), &ucli.StringFlag{Name: "branch", Usage: "branch to compare"}),
		Action: func(c *ucli.Context) error {
			m, err := mirrorFor(c, d)
			if err != nil {
				return err
			}
			st := m.Compare(c.Context, c.String("branch"))
			if c.Bool("json") {
				return writeJSON(d.Stdout, st)
			}
			str := func(p *string) string {
				if p == nil {
					return "-"
				}
				return *p
			}
			num := func(p *int) string {
				if p == nil {
					return "?"
				}
				return fmt.Sprint(*p)
			}
			fmt.Fprintf(d.Stdout, "Branch:        %s\nGate head:     %s\nUpstream head: %s\nStale:         %v\nBehind:        %s\nAhead:         %s\nChecked:       %s\n",
				str(st.Branch), str(st.GateHead), str(st.UpstreamHead), st.IsStale, num(st.CommitsBehind), num(st.CommitsAhead), st.LastChecked)
			if st.Error != nil {
				return errors.New(*st.Error)
			}
			return nil
		},
	}
}

func gateLastCommitCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:      "last-commit",
		Usage:     "show the last commit of PROJECT's gate mirror (--default-branch, else HEAD)",
		ArgsUsage: "PROJECT",
		Flags:     mirrorFlags(),
		Action: func(c *ucli.Context) error {
			m, err := mirrorFor(c, d)
			if err != nil {
				return err
			}
			lc := m.LastCommit(context.WithoutCancel(c.Context))
			if c.Bool("json") {
				return writeJSON(d.Stdout, lc)
			}
			if lc == nil {
				return errors.New("no commit found: the gate mirror is missing or empty; run 'terok-sandbox gate sync' first")
			}
			fmt.Fprintf(d.Stdout, "%s %s\nAuthor: %s\nDate:   %s\n", lc.Hash, lc.Message, lc.Author, lc.Date)
			return nil
		},
	}
}
