// Package hostsetup is `terok-sandbox setup` and `uninstall`
// (docs/operations.md, Set up a host in one call): everything a host needs, as a
// list of steps that each first work out what would change and then change
// only that. The plan-then-apply shape gives the three properties the
// command promises: --dry-run prints the plan and touches nothing, a second
// setup finds nothing to do, and a setup killed half-way is completed by the
// next one (every step looks at the host as it is, not at a record of what
// an earlier run meant to do).
package hostsetup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/runner/internal/shield"
)

// Scope is whose host setup is done for.
type Scope string

// Scopes.
const (
	// ScopeUser is a rootless user: user units, user hooks directory.
	ScopeUser Scope = "user"
	// ScopeSystem is root: the system hooks directory, PID-file daemons.
	ScopeSystem Scope = "system"
)

// ChooseScope turns the --user/--system flags into a scope for euid: the
// default is the caller's own (root → system); asking for the other one is
// refused, since root's podman does not read a user's hooks and a user
// cannot write root's directories.
func ChooseScope(user, system bool, euid int) (Scope, error) {
	switch {
	case user && system:
		return "", errors.New("--user and --system are mutually exclusive")
	case system && euid != 0:
		return "", errors.New("--system sets the host up for root's podman and needs root: run it as root (e.g. sudo terok-sandbox setup --system), or drop --system for your own rootless setup")
	case user && euid == 0:
		return "", errors.New("--user as root would set up nothing that root's podman reads; run it as the user who runs the tasks, or use --system")
	case euid == 0:
		return ScopeSystem, nil
	default:
		return ScopeUser, nil
	}
}

// Step is one part of the setup. Plan looks at the host and lists the
// changes Apply would make (none: nothing to do); Apply makes them.
type Step struct {
	Name  string
	Plan  func(ctx context.Context) ([]string, error)
	Apply func(ctx context.Context) error
}

// Options are what the steps work on. Every path comes from Cfg and Paths,
// so tests point them all into a temporary tree.
type Options struct {
	Cfg   config.Config
	Env   config.Env
	Scope Scope
	// Paths are podman's configuration files and hooks directories.
	Paths shield.HostPaths
	// Tools finds podman, nft and sudo.
	Tools shield.Tools
	// HookBinary is the installed terok-shield-hook ("" when not found).
	HookBinary string
	// Daemons are the host daemons to install or start, in order.
	Daemons []Daemon
	// Out receives the per-step report.
	Out io.Writer
}

// Result is what Run did.
type Result struct {
	// Changed counts the steps that had something to do.
	Changed int
}

// Run plans every step and, unless dryRun, applies the ones with changes.
// It stops at the first failing step: later steps may depend on it (the
// daemons need their directories), and the next run resumes there.
func Run(ctx context.Context, steps []Step, dryRun bool, out io.Writer) (Result, error) {
	var res Result
	for _, s := range steps {
		changes, err := s.Plan(ctx)
		if err != nil {
			return res, fmt.Errorf("%s: %w", s.Name, err)
		}
		if len(changes) == 0 {
			fmt.Fprintf(out, "%s: nothing to do\n", s.Name)
			continue
		}
		res.Changed++
		verb := ""
		if dryRun {
			verb = "would "
		}
		for _, c := range changes {
			fmt.Fprintf(out, "%s: %s%s\n", s.Name, verb, c)
		}
		if dryRun {
			continue
		}
		if err := s.Apply(ctx); err != nil {
			return res, fmt.Errorf("%s: %w", s.Name, err)
		}
	}
	return res, nil
}

// Package names of the tools setup needs, per package manager: the
// message names each missing one and the command that installs it.
var requiredTools = []struct {
	bin, apt, dnf string
}{
	{"podman", "podman", "podman"},
	{"nft", "nftables", "nftables"},
}

// MissingToolsError lists the tools the host lacks.
type MissingToolsError struct {
	Tools    []string
	Packages []string
	Command  string
}

func (e *MissingToolsError) Error() string {
	return fmt.Sprintf("this host lacks %s (package %s); install with: %s, then run the setup again",
		strings.Join(e.Tools, ", "), strings.Join(e.Packages, ", "), e.Command)
}

// Preflight checks that the tools the sandbox drives are installed; the
// error names each missing package and the install command of the host's
// package manager.
func Preflight(t shield.Tools, euid int) error { return preflight(t, euid, true) }

// preflight looks on t's path and, with fallbacks, in the system
// directories a sudo-less PATH may lack (nft lives in /usr/sbin).
func preflight(t shield.Tools, euid int, fallbacks bool) error {
	look := func(name string) bool {
		if !fallbacks {
			return t.LookPath(name) != ""
		}
		return t.LookPath(name, "/usr/bin/"+name, "/usr/sbin/"+name, "/sbin/"+name) != ""
	}
	var miss MissingToolsError
	dnf := !look("apt-get") && look("dnf")
	for _, r := range requiredTools {
		if look(r.bin) {
			continue
		}
		miss.Tools = append(miss.Tools, r.bin)
		if dnf {
			miss.Packages = append(miss.Packages, r.dnf)
		} else {
			miss.Packages = append(miss.Packages, r.apt)
		}
	}
	if len(miss.Tools) == 0 {
		return nil
	}
	pm := "apt-get install -y"
	if dnf {
		pm = "dnf install -y"
	}
	if euid != 0 {
		pm = "sudo " + pm
	}
	miss.Command = pm + " " + strings.Join(miss.Packages, " ")
	return &miss
}

// Steps is the whole setup, in order: directories, the default config
// file, the shield's hooks and seccomp profile, then each daemon.
func (o Options) Steps() []Step {
	steps := []Step{o.dirStep(), o.configStep(), o.hooksStep(), o.seccompStep()}
	for _, d := range o.Daemons {
		d := d
		apply := d.Apply
		if withDirs, ok := d.(interface{ Dirs() []string }); ok {
			// The unit directory is recorded like the others, so
			// uninstall removes it again when it made it.
			apply = func(ctx context.Context) error {
				for _, dir := range withDirs.Dirs() {
					if err := o.mkdirRecorded(dir, 0o755); err != nil {
						return err
					}
				}
				return d.Apply(ctx)
			}
		}
		steps = append(steps, Step{Name: d.Name(), Plan: d.Plan, Apply: apply})
	}
	return steps
}

// record is where setup notes the directories it created, so uninstall
// removes those (when empty) and nothing that was there before.
func (o Options) record() string {
	return filepath.Join(o.Cfg.ConfigDir, recordName)
}

const recordName = "setup-created.list"
