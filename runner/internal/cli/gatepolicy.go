package cli

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	ucli "github.com/urfave/cli/v2"

	"terok.dev/sandbox/common/gatepolicy"
)

// gatePolicyCommand is `terok-sandbox gate policy PROJECT ...`: show or
// change a project's push policy (docs/gate.md, Push policy).
func gatePolicyCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:      "policy",
		Usage:     "show or change PROJECT's push policy (protected refs, force pushes, deletions, task namespace)",
		ArgsUsage: "PROJECT",
		Flags: []ucli.Flag{
			&ucli.StringSliceFlag{Name: "protect", Usage: "protect a ref pattern (repeatable): HEAD (the default branch) or refs/... with * matching anything"},
			&ucli.StringSliceFlag{Name: "unprotect", Usage: "stop protecting a pattern (repeatable)"},
			&ucli.BoolFlag{Name: "allow-force", Usage: "allow non-fast-forward pushes (--allow-force=false forbids them again)"},
			&ucli.BoolFlag{Name: "allow-delete", Usage: "allow ref deletions (--allow-delete=false forbids them again)"},
			&ucli.StringFlag{Name: "task-namespace", Usage: "confine each task to PATTERN with {task} (e.g. refs/heads/terok/{task}/*), or off"},
			&ucli.BoolFlag{Name: "reset", Usage: "go back to the default policy (removes the file) before applying the other options"},
			jsonFlag(),
		},
		Action: func(c *ucli.Context) error {
			if c.NArg() != 1 {
				return UsageErrorf("expected one PROJECT argument, e.g. terok-sandbox gate policy myproj --protect 'refs/heads/release/*'")
			}
			project := c.Args().First()
			if err := checkProject(project); err != nil {
				return err
			}
			change, err := policyChange(c)
			if err != nil {
				return err
			}
			cfg, err := loadConfig(c, d)
			if err != nil {
				return err
			}
			dir := cfg.GatePolicyDir()
			if c.Bool("reset") {
				if err := os.Remove(gatepolicy.File(dir, project)); err != nil && !errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("reset gate policy: %w", err)
				}
			}
			var p gatepolicy.Policy
			found := true
			if change != nil {
				p, err = gatepolicy.Update(dir, project, change)
			} else {
				p, found, err = gatepolicy.Load(dir, project)
			}
			if err != nil {
				var ue usageError
				if errors.As(err, &ue) {
					return err
				}
				return fmt.Errorf("%w; fix it with 'terok-sandbox gate policy %s --reset'", err, project)
			}
			source := gatepolicy.File(dir, project)
			if !found {
				source = "default (no policy file)"
			}
			if c.Bool("json") {
				return writeJSON(d.Stdout, map[string]any{"project": project, "source": source, "policy": p})
			}
			ns := p.TaskNamespace
			if ns == "" {
				ns = "off"
			}
			prot := strings.Join(p.Protect, " ")
			if prot == "" {
				prot = "(none)"
			}
			fmt.Fprintf(d.Stdout, "Project:          %s\nSource:           %s\nProtected:        %s\nForce pushes:     %s\nDeletions:        %s\nTask namespace:   %s\n",
				project, source, prot, allowed(p.AllowNonFastForward), allowed(p.AllowDeletions), ns)
			return nil
		},
	}
}

func allowed(b bool) string {
	if b {
		return "allowed"
	}
	return "refused"
}

// policyChange turns the flags into a change of the policy, nil when only
// showing. Bad patterns are usage errors (exit 2) with an example.
func policyChange(c *ucli.Context) (func(*gatepolicy.Policy) error, error) {
	protect, unprotect := c.StringSlice("protect"), c.StringSlice("unprotect")
	for _, pat := range append(append([]string(nil), protect...), unprotect...) {
		if err := gatepolicy.CheckPattern(pat); err != nil {
			return nil, UsageErrorf("%v", err)
		}
	}
	ns, nsSet := c.String("task-namespace"), c.IsSet("task-namespace")
	if nsSet && ns != "off" && ns != "" {
		if err := gatepolicy.CheckNamespace(ns); err != nil {
			return nil, UsageErrorf("%v (or off)", err)
		}
	}
	if len(protect) == 0 && len(unprotect) == 0 && !nsSet && !c.IsSet("allow-force") && !c.IsSet("allow-delete") {
		return nil, nil // show (after --reset: the default)
	}
	return func(p *gatepolicy.Policy) error {
		for _, pat := range unprotect {
			i := slices.Index(p.Protect, pat)
			if i < 0 {
				return UsageErrorf("%s is not protected (protected: %s); e.g. --unprotect 'refs/tags/*'", pat, strings.Join(p.Protect, " "))
			}
			p.Protect = slices.Delete(p.Protect, i, i+1)
		}
		for _, pat := range protect {
			if !slices.Contains(p.Protect, pat) {
				p.Protect = append(p.Protect, pat)
			}
		}
		if c.IsSet("allow-force") {
			p.AllowNonFastForward = c.Bool("allow-force")
		}
		if c.IsSet("allow-delete") {
			p.AllowDeletions = c.Bool("allow-delete")
		}
		if nsSet {
			p.TaskNamespace = ns
			if ns == "off" {
				p.TaskNamespace = ""
			}
		}
		return nil
	}, nil
}
