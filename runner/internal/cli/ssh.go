package cli

import (
	"fmt"
	"strings"
	"time"

	ucli "github.com/urfave/cli/v2"

	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/common/sshkeys"
	"terok.dev/sandbox/runner/internal/sshmanager"
)

// sshCommand is `terok-sandbox ssh ...` (docs/ssh-agent.md, Key management (`terok-sandbox ssh …`)):
// project SSH keys on the host and the phantom tokens of the SSH agent.
func sshCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:  "ssh",
		Usage: "SSH keys of projects (served to containers by terok-ssh-agent)",
		Subcommands: []*ucli.Command{
			sshInitCommand(d), sshListCommand(d), sshImportCommand(d), sshAddKeyCommand(d), sshRestrictCommand(d), sshTokenCommand(d),
		},
	}
}

func sshManager(c *ucli.Context, d Deps) (sshmanager.Manager, error) {
	cfg, err := loadConfig(c, d)
	if err != nil {
		return sshmanager.Manager{}, err
	}
	return sshmanager.New(cfg, d.Env), nil
}

func destinationFlag() ucli.Flag {
	return &ucli.GenericFlag{Name: "destination", Value: &listFlag{}, Usage: "sign only for this host pattern (github.com, *.example.org; resolved through ssh_known_hosts beside ssh-keys.json) or host key fingerprint (SHA256:...); repeatable"}
}

// destinations returns the validated --destination values (exit 2 on a bad one).
func destinations(c *ucli.Context) ([]string, error) {
	ds := listOf(c, "destination")
	if err := sshmanager.CheckDestinations(ds); err != nil {
		return nil, UsageErrorf("--destination: %v", err)
	}
	return ds, nil
}

func keyTypeFlag() ucli.Flag {
	return &ucli.StringFlag{Name: "key-type", Value: sshmanager.TypeEd25519, Usage: "ed25519 or rsa"}
}

// sshKeyWrite is the action skeleton of the commands that write a project's
// key (init, import, add-key): PROJECT, the checked --destination values,
// check's usage checks, the key manager of the configuration with the
// secret store ready for the write (prepareSecretWrite), then write.
func sshKeyWrite(d Deps, check func(fa *cmdArgs, dests []string) error,
	write func(fa *cmdArgs, project string, dests []string, m sshmanager.Manager) error) ucli.ActionFunc {
	return func(c *ucli.Context) error {
		fa, a, err := argsExactly(c, "project")
		if err != nil {
			return err
		}
		dests, err := destinations(c)
		if err != nil {
			return err
		}
		if err := check(fa, dests); err != nil {
			return err
		}
		m, err := sshManager(c, d)
		if err != nil {
			return err
		}
		if err := prepareSecretWrite(c, d); err != nil {
			return err
		}
		return write(fa, a[0], dests, m)
	}
}

// checkKeyType is the --key-type check of init and add-key (exit 2).
func checkKeyType(fa *cmdArgs) error {
	if err := sshmanager.CheckKeyType(fa.String("key-type")); err != nil {
		return UsageErrorf("%v", err)
	}
	return nil
}

func sshInitCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:      "init",
		Usage:     "create the project's main key (tk-main) and ssh config, and register the key",
		ArgsUsage: "PROJECT",
		Flags: []ucli.Flag{
			keyTypeFlag(),
			&ucli.StringFlag{Name: "key-name", Usage: "key file name (default id_<algo>_<project>)"},
			&ucli.StringFlag{Name: "dir", Usage: "key directory (default <state_dir>/ssh-keys/<project>)"},
			&ucli.StringFlag{Name: "config-template", Usage: "SSH config template with {{KEY_NAME}}, {{IDENTITY_FILE}}, {{PROJECT_ID}}"},
			&ucli.BoolFlag{Name: "force", Usage: "replace the existing key and config"},
			&ucli.BoolFlag{Name: "no-register", Usage: "do not add the key to ssh-keys.json"},
			destinationFlag(),
			jsonFlag(),
		},
		Action: sshKeyWrite(d, func(fa *cmdArgs, dests []string) error {
			if err := checkKeyType(fa); err != nil {
				return err
			}
			if len(dests) > 0 && fa.Bool("no-register") {
				return UsageErrorf("--destination is stored in ssh-keys.json and needs registration; drop --no-register")
			}
			return nil
		}, func(fa *cmdArgs, project string, dests []string, m sshmanager.Manager) error {
			res, err := m.Init(sshmanager.InitOptions{
				Project: project, KeyType: fa.String("key-type"), KeyName: fa.String("key-name"),
				Dir: fa.String("dir"), ConfigTemplate: fa.String("config-template"), Force: fa.Bool("force"),
				Destinations: dests,
			})
			if err != nil {
				return err
			}
			if !fa.Bool("no-register") {
				if err := m.Register(project, res.PrivateKey, res.PublicKey, dests...); err != nil {
					return fmt.Errorf("key created at %s but not registered: %w", res.PrivateKey, err)
				}
			}
			if fa.Bool("json") {
				return writeJSON(d.Stdout, res)
			}
			fmt.Fprintf(d.Stdout, "SSH directory initialized:\n  dir: %s\n  private key: %s\n  public key: %s\n  config: %s\n",
				res.Dir, res.PrivateKey, res.PublicKey, res.ConfigPath)
			if res.PublicText != "" {
				fmt.Fprintf(d.Stdout, "Public key:\n%s\n", res.PublicText)
			}
			return nil
		}),
	}
}

func sshListCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:  "list",
		Usage: "list registered SSH keys",
		Flags: []ucli.Flag{&ucli.StringFlag{Name: "project", Usage: "only this project"}, jsonFlag()},
		Action: func(c *ucli.Context) error {
			fa, _, err := argsExactly(c)
			if err != nil {
				return err
			}
			m, err := sshManager(c, d)
			if err != nil {
				return err
			}
			rows, err := m.List(fa.String("project"))
			if err != nil {
				return err
			}
			if fa.Bool("json") {
				if rows == nil {
					rows = []sshmanager.Row{}
				}
				return writeJSON(d.Stdout, rows)
			}
			if len(rows) == 0 {
				fmt.Fprintln(d.Stdout, "No SSH keys registered.")
				return nil
			}
			fmt.Fprint(d.Stdout, sshmanager.FormatTable(rows))
			return nil
		},
	}
}

func sshImportCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:      "import",
		Usage:     "copy an existing key pair into the project's key directory and register it",
		ArgsUsage: "PROJECT",
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "private-key", Usage: "private key file (unencrypted)"},
			&ucli.StringFlag{Name: "public-key", Usage: "public key file (default <private-key>.pub)"},
			destinationFlag(),
			jsonFlag(),
		},
		Action: sshKeyWrite(d, func(fa *cmdArgs, _ []string) error {
			if fa.String("private-key") == "" {
				return UsageErrorf("--private-key is required")
			}
			return nil
		}, func(fa *cmdArgs, project string, dests []string, m sshmanager.Manager) error {
			res, err := m.Import(project, fa.String("private-key"), fa.String("public-key"), dests...)
			if err != nil {
				return err
			}
			if fa.Bool("json") {
				return writeJSON(d.Stdout, res)
			}
			for i, cp := range res.Copies {
				what := "private"
				if i == 1 {
					what = "public"
				}
				fmt.Fprintf(d.Stdout, "Copying %s key: %s\n              → %s\n", what, cp.Src, cp.Dst)
			}
			fmt.Fprintf(d.Stdout, "Registered key for project '%s': %s\n", res.Project, res.PrivateKey)
			return nil
		}),
	}
}

func sshAddKeyCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:      "add-key",
		Usage:     "generate an additional (tk-side) key for a project and register it",
		ArgsUsage: "PROJECT",
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "name", Usage: "key name (letters, '_' and '-'); default key-<N>"},
			keyTypeFlag(),
			destinationFlag(),
			jsonFlag(),
		},
		Action: sshKeyWrite(d, func(fa *cmdArgs, _ []string) error { return checkKeyType(fa) }, func(fa *cmdArgs, project string, dests []string, m sshmanager.Manager) error {
			res, err := m.AddKey(project, fa.String("name"), fa.String("key-type"), dests...)
			if err != nil {
				return err
			}
			if fa.Bool("json") {
				return writeJSON(d.Stdout, res)
			}
			fmt.Fprintf(d.Stdout, "SSH key generated for project '%s':\n  name: %s\n  private key: %s\n  public key: %s\n  comment: %s\n",
				res.Project, res.Name, res.PrivateKey, res.PublicKey, res.Comment)
			if res.PublicText != "" {
				fmt.Fprintf(d.Stdout, "Public key (add as deploy key):\n%s\n", res.PublicText)
			}
			return nil
		}),
	}
}

// MaxTTL bounds a token's --ttl (a year, leap day included).
const MaxTTL = 8784 * time.Hour

// ParseTTL reads a token lifetime: a Go duration (8h, 90m, 1h30m) of at
// least a minute and at most MaxTTL.
func ParseTTL(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (e.g. 8h, 90m, 1h30m)", v)
	}
	if d < time.Minute || d > MaxTTL {
		return 0, fmt.Errorf("%s is out of range: 1m .. %s (e.g. 8h)", v, MaxTTL)
	}
	return d, nil
}

func sshRestrictCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:      "restrict",
		Usage:     "bind a registered key to destinations (--destination ...), or lift the binding (--clear)",
		ArgsUsage: "PROJECT KEY",
		Description: "KEY is the KEY column of 'ssh list' (the key's comment), the key file's name or the private key's path.\n" +
			"Example: terok-sandbox ssh restrict demo tk-main:demo --destination github.com --destination '*.example.org'",
		Flags: []ucli.Flag{
			destinationFlag(),
			&ucli.BoolFlag{Name: "clear", Usage: "remove the destinations: the key signs for any host"},
			jsonFlag(),
		},
		Action: func(c *ucli.Context) error {
			fa, a, err := argsExactly(c, "project", "key")
			if err != nil {
				return err
			}
			dests, err := destinations(c)
			if err != nil {
				return err
			}
			if (len(dests) == 0) == !fa.Bool("clear") {
				return UsageErrorf("give --destination (repeatable) or --clear, not both; e.g. terok-sandbox ssh restrict %s KEY --destination github.com", a[0])
			}
			m, err := sshManager(c, d)
			if err != nil {
				return err
			}
			row, err := m.Restrict(a[0], a[1], dests)
			if err != nil {
				return err
			}
			if fa.Bool("json") {
				return writeJSON(d.Stdout, row)
			}
			if len(dests) == 0 {
				fmt.Fprintf(d.Stdout, "Key %s of project '%s' signs for any host again.\n", row.Key, row.Project)
				return nil
			}
			fmt.Fprintf(d.Stdout, "Key %s of project '%s' signs only for: %s\n", row.Key, row.Project, strings.Join(dests, ", "))
			return nil
		},
	}
}

func sshTokenCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:  "token",
		Usage: "phantom tokens for the SSH agent handshake",
		Subcommands: []*ucli.Command{{
			Name:      "create",
			Usage:     "issue the SSH agent token of a task (printed once; give it to the container as TEROK_SSH_AGENT_TOKEN)",
			ArgsUsage: "PROJECT TASK",
			Flags:     []ucli.Flag{tokenTTLFlag(), tokenContainerFlag(), jsonFlag()},
			Action: func(c *ucli.Context) error {
				fa, a, err := argsExactly(c, "project", "task")
				if err != nil {
					return err
				}
				if err := checkProjectTask(a[0], a[1]); err != nil {
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
				cfg, err := loadConfig(c, d)
				if err != nil {
					return err
				}
				db, err := creddb.Open(cfg.CredentialsDB())
				if err != nil {
					return err
				}
				defer db.Close()
				if err := markStarts(c, d, container); err != nil {
					return err
				}
				tok, err := db.CreateToken(c.Context, creddb.TokenSpec{Project: a[0], Task: a[1], Set: creddb.DefaultSet, Provider: creddb.SSHProvider, Expires: expires, Container: container})
				if err != nil {
					return err
				}
				if km, err := sshkeys.Read(cfg.SSHKeysJSON()); err != nil || len(km[a[0]]) == 0 {
					fmt.Fprintf(d.Stderr, "Warning: project '%s' has no registered SSH key; the agent will refuse this token until one is added (terok-sandbox ssh init %s).\n", a[0], a[0])
				}
				return printToken(d, fa, tok, expires, container, map[string]any{"project": a[0], "task": a[1], "provider": creddb.SSHProvider})
			},
		}},
	}
}
