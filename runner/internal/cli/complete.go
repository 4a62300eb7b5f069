package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"slices"
	"strings"

	ucli "github.com/urfave/cli/v2"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/common/names"
	"terok.dev/sandbox/runner/internal/completion"
	"terok.dev/sandbox/runner/internal/launch"
	"terok.dev/sandbox/runner/internal/profile"
)

// CompleteCommand is the hidden command the shell completion scripts run
// for dynamic values (docs/runner.md, Shell completion).
const CompleteCommand = "__complete"

// completeWord is what __complete prints: a plain name. The scripts keep
// only such lines as well, so a name podman or a file system holds can
// never become shell syntax.
var completeWord = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// completeCommand is `terok-sandbox __complete KIND`: the values of one
// kind, one per line, sorted. It reads only; it never creates state.
func completeCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:      CompleteCommand,
		Hidden:    true,
		Usage:     "print the names shell completion offers: " + strings.Join(completion.Kinds(), ", "),
		ArgsUsage: "KIND",
		Flags:     []ucli.Flag{&ucli.StringFlag{Name: "set", Value: creddb.DefaultSet, Usage: "credential set (for credentials)"}},
		Action: func(c *ucli.Context) error {
			fa, a, err := argsExactly(c, "kind")
			if err != nil {
				return err
			}
			if !slices.Contains(completion.Kinds(), a[0]) {
				return UsageErrorf("KIND %q is not one of %s", a[0], strings.Join(completion.Kinds(), ", "))
			}
			cfg, err := loadConfig(c, d)
			if err != nil {
				return err
			}
			var words []string
			switch a[0] {
			case completion.KindContainer:
				entries, err := podmanFor(d).List(c.Context, "label="+launch.LabelRunnerVersion)
				if err != nil {
					return err
				}
				for _, e := range entries {
					if _, ok := e.Labels[launch.LabelRunnerVersion]; ok {
						words = append(words, e.Name())
					}
				}
			case completion.KindProject:
				words, err = projectNames(cfg)
			case completion.KindProfile:
				words = profile.Store{UserDir: cfg.ShieldProfilesDir()}.List()
			case completion.KindCredential:
				words, err = credentialNames(c, cfg, fa.String("set"))
			}
			if err != nil {
				return err
			}
			slices.Sort(words)
			for _, w := range slices.Compact(words) {
				if completeWord.MatchString(w) {
					fmt.Fprintln(d.Stdout, w)
				}
			}
			return nil
		},
	}
}

// projectNames are the projects this host knows: a gate mirror
// (<state>/gate/<project>.git) or an SSH key directory
// (<state>/ssh-keys/<project>).
func projectNames(cfg config.Config) ([]string, error) {
	var out []string
	for _, src := range []struct{ dir, suffix string }{{cfg.GateBasePath(), ".git"}, {cfg.SSHKeysDir(), ""}} {
		ents, err := os.ReadDir(src.dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list projects in %s: %w", src.dir, err)
		}
		for _, e := range ents {
			n, ok := strings.CutSuffix(e.Name(), src.suffix)
			if e.IsDir() && ok && names.ValidateProjectID(n) == nil {
				out = append(out, n)
			}
		}
	}
	return out, nil
}

// credentialNames are the providers stored in set; no database is none
// (completion must not create one).
func credentialNames(c *ucli.Context, cfg config.Config, set string) ([]string, error) {
	path := cfg.CredentialsDB()
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	db, err := creddb.Open(path)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	return db.ListCredentials(c.Context, set)
}

// shieldEntriesCommand is `shield entries PROFILE...`: the entries the
// named profiles compose to, in the order a launch uses them (`shield
// profiles` lists the profiles themselves).
func shieldEntriesCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:      "entries",
		Usage:     "print the entries the named profiles compose to, in the order a launch uses them",
		ArgsUsage: "PROFILE...",
		Flags:     []ucli.Flag{jsonFlag()},
		Action: func(c *ucli.Context) error {
			fa := parseArgs(c)
			if len(fa.pos) == 0 {
				return UsageErrorf("name at least one profile (e.g. terok-sandbox shield entries dev-standard); shield profiles lists them")
			}
			for _, n := range fa.pos {
				if !profile.ValidName(n) {
					return UsageErrorf("%q is not a profile name (letters, digits, '.', '_', '-')", n)
				}
			}
			cfg, err := loadConfig(c, d)
			if err != nil {
				return err
			}
			list, err := profile.Store{UserDir: cfg.ShieldProfilesDir()}.Compose(fa.pos)
			if err != nil {
				return err
			}
			if fa.Bool("json") {
				return writeJSON(d.Stdout, nonNil(list))
			}
			for _, l := range list {
				fmt.Fprintln(d.Stdout, l)
			}
			return nil
		},
	}
}
