package hostsetup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"terok.dev/sandbox/common/atomicfile"
)

// UninstallSteps undo the setup, daemons first (nothing may be left
// running on a removed unit or profile). removals are the daemons'
// undo forms (DaemonManagers.RemovalDaemons). purge also removes the state
// and credentials directories: tokens, mirrors, keys, the credential
// store. Without it they are kept, and so are the directories that hold
// them.
func (o Options) UninstallSteps(removals []Daemon, purge bool) []Step {
	var steps []Step
	for _, d := range removals {
		steps = append(steps, Step{Name: d.Name(), Plan: d.RemovePlan, Apply: d.Remove})
	}
	steps = append(steps, o.removeHooksStep())
	if o.Scope == ScopeUser {
		steps = append(steps, o.revertConfStep())
	}
	steps = append(steps,
		removeFileStep("seccomp profile", o.seccompPath(), nil),
		removeFileStep("config file", o.configPath(), DefaultConfig(o.Cfg)))
	if purge {
		steps = append(steps, o.purgeStep())
	}
	return append(steps, o.createdDirsStep(o.pendingRemovals(removals, purge)))
}

// pendingRemovals are the paths the earlier uninstall steps remove, so a
// dry run's plan for the created directories counts them as gone (in a
// real run they are).
func (o Options) pendingRemovals(removals []Daemon, purge bool) func() []string {
	return func() []string {
		out := append([]string{o.seccompPath()}, o.descriptorPaths()...)
		if have, err := os.ReadFile(o.configPath()); err == nil && string(have) == string(DefaultConfig(o.Cfg)) {
			out = append(out, o.configPath())
		}
		if o.Scope == ScopeUser {
			if _, found, empty, err := o.revertedConf(); err == nil && found && empty {
				out = append(out, o.Paths.UserContainersConf)
			}
		}
		for _, d := range removals {
			if u, ok := d.(unitDaemon); ok {
				for _, n := range u.names() {
					out = append(out, filepath.Join(u.dir, n))
				}
			}
		}
		if purge {
			out = append(out, o.Cfg.StateDir, o.Cfg.CredentialsDir)
		}
		return out
	}
}

// removeFileStep removes path; with want set, only when the file still
// holds exactly that (an operator's edits are kept).
func removeFileStep(name, path string, want []byte) Step {
	return Step{
		Name: name,
		Plan: func(context.Context) ([]string, error) {
			have, err := os.ReadFile(path)
			if errors.Is(err, os.ErrNotExist) {
				return nil, nil
			}
			if err != nil {
				return nil, err
			}
			if want != nil && string(have) != string(want) {
				return nil, nil
			}
			return []string{"remove " + path}, nil
		},
		Apply: func(context.Context) error {
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("remove %s: %w", path, err)
			}
			return nil
		},
	}
}

func (o Options) descriptorPaths() []string {
	return []string{
		filepath.Join(o.hooksDir(), "terok-shield-createRuntime.json"),
		filepath.Join(o.hooksDir(), "terok-shield-poststop.json"),
	}
}

func (o Options) removeHooksStep() Step {
	return Step{
		Name: "shield hooks",
		Plan: func(context.Context) ([]string, error) {
			var changes []string
			for _, p := range o.descriptorPaths() {
				if _, err := os.Lstat(p); err == nil {
					changes = append(changes, "remove hook descriptor "+p)
				}
			}
			return changes, nil
		},
		Apply: func(context.Context) error {
			for _, p := range o.descriptorPaths() {
				if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("remove %s: %w", p, err)
				}
			}
			return nil
		},
	}
}

// ourHooksLine is the hooks_dir line the user setup writes
// (shield.EnsureUserHooksDir): only that exact line is taken out again.
func (o Options) ourHooksLine() string {
	list := o.Paths.UserHooksDirList(o.hooksDir())
	q := make([]string, len(list))
	for i, d := range list {
		q[i] = strconv.Quote(d)
	}
	return "hooks_dir = [" + strings.Join(q, ", ") + "]"
}

// revertedConf is the user containers.conf without our line, and whether
// the file is then empty of everything but an [engine] header (it was ours).
func (o Options) revertedConf() (out string, found, empty bool, err error) {
	data, err := os.ReadFile(o.Paths.UserContainersConf)
	if errors.Is(err, os.ErrNotExist) {
		return "", false, false, nil
	}
	if err != nil {
		return "", false, false, err
	}
	var b strings.Builder
	rest := ""
	for _, l := range strings.SplitAfter(string(data), "\n") {
		if strings.TrimSpace(l) == o.ourHooksLine() && !found {
			found = true
			continue
		}
		b.WriteString(l)
		if t := strings.TrimSpace(l); t != "" && t != "[engine]" {
			rest += t
		}
	}
	return b.String(), found, rest == "", nil
}

func (o Options) revertConfStep() Step {
	conf := o.Paths.UserContainersConf
	return Step{
		Name: "containers.conf",
		Plan: func(context.Context) ([]string, error) {
			_, found, empty, err := o.revertedConf()
			switch {
			case err != nil:
				return nil, err
			case !found:
				return nil, nil
			case empty:
				return []string{"remove " + conf + " (it holds only the shield's hooks_dir)"}, nil
			default:
				return []string{"remove the shield's hooks_dir line from " + conf}, nil
			}
		},
		Apply: func(context.Context) error {
			out, found, empty, err := o.revertedConf()
			if err != nil || !found {
				return err
			}
			if empty {
				return os.Remove(conf)
			}
			st, err := os.Stat(conf)
			if err != nil {
				return err
			}
			return atomicfile.WriteFile(conf, []byte(out), st.Mode().Perm())
		},
	}
}

func (o Options) purgeStep() Step {
	targets := []string{o.Cfg.StateDir, o.Cfg.CredentialsDir}
	return Step{
		Name: "state (--purge)",
		Plan: func(context.Context) ([]string, error) {
			var changes []string
			for _, p := range targets {
				if _, err := os.Lstat(p); err == nil {
					changes = append(changes, "remove "+p+" and everything in it")
				}
			}
			return changes, nil
		},
		Apply: func(context.Context) error {
			for _, p := range targets {
				if err := os.RemoveAll(p); err != nil {
					return fmt.Errorf("remove %s: %w", p, err)
				}
			}
			return nil
		},
	}
}

// isWithin reports whether p is dir or below it.
func isWithin(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// createdDirsStep removes the directories setup created that are now
// empty, deepest first, then the record (kept while any recorded
// directory remains, so a later uninstall still knows them).
func (o Options) createdDirsStep(pending func() []string) Step {
	plan := func() (remove, keep []string, err error) {
		goneAlready := pending()
		removed := func(p string) bool {
			for _, g := range goneAlready {
				if isWithin(p, g) {
					return true
				}
			}
			return false
		}
		rec, err := o.readRecord()
		if err != nil {
			return nil, nil, err
		}
		sort.Slice(rec, func(i, j int) bool { return len(rec[i]) > len(rec[j]) })
		gone := map[string]bool{}
		for _, p := range rec {
			if removed(p) {
				// The purge takes it with its tree.
				gone[p] = true
				continue
			}
			entries, err := os.ReadDir(p)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				keep = append(keep, p)
				continue
			}
			empty := true
			for _, e := range entries {
				child := filepath.Join(p, e.Name())
				if gone[child] || removed(child) || (child == o.record() && filepath.Dir(o.record()) == p) {
					continue
				}
				empty = false
			}
			if empty {
				remove = append(remove, p)
				gone[p] = true
			} else {
				keep = append(keep, p)
			}
		}
		// The record stays while anything recorded stays.
		if len(keep) > 0 {
			var r []string
			for _, p := range remove {
				if isWithin(o.record(), p) {
					keep = append(keep, p)
				} else {
					r = append(r, p)
				}
			}
			remove = r
		}
		return remove, keep, nil
	}
	return Step{
		Name: "created directories",
		Plan: func(context.Context) ([]string, error) {
			remove, _, err := plan()
			var changes []string
			for _, p := range remove {
				changes = append(changes, "remove the empty "+p)
			}
			return changes, err
		},
		Apply: func(context.Context) error {
			remove, keep, err := plan()
			if err != nil {
				return err
			}
			if len(keep) == 0 {
				if err := os.Remove(o.record()); err != nil && !errors.Is(err, os.ErrNotExist) {
					return err
				}
			}
			for _, p := range remove {
				if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("remove %s: %w", p, err)
				}
			}
			if len(keep) > 0 {
				return atomicfile.WriteFile(o.record(), []byte(strings.Join(keep, "\n")+"\n"), 0o644)
			}
			return nil
		},
	}
}
