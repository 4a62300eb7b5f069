package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"

	ucli "github.com/urfave/cli/v2"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/runner/internal/mirror"
)

// Push review: `gate review`, `gate promote`, `gate reject` (docs/gate.md,
// Push review).

func gateReviewCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:      "review",
		Usage:     "list the refs tasks pushed to PROJECT's mirror that upstream does not have yet",
		ArgsUsage: "PROJECT",
		Flags:     append(mirrorFlags(), &ucli.StringFlag{Name: "task", Usage: "only this task's pushes"}),
		Action: func(c *ucli.Context) error {
			m, err := mirrorFor(c, d)
			if err != nil {
				return err
			}
			cfg, err := loadConfig(c, d)
			if err != nil {
				return err
			}
			list, err := m.Review(c.Context, []string{cfg.AuditFile("gate")}, c.String("task"))
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return writeJSON(d.Stdout, list)
			}
			if len(list) == 0 {
				fmt.Fprintln(d.Stdout, "Nothing to review: no task pushed a ref upstream does not have.")
				return nil
			}
			tw := tabwriter.NewWriter(d.Stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "REF\tTASK\tCOMMITS\tDIFFSTAT\tPUSHED\tTOKEN")
			for _, p := range list {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d files +%d -%d\t%s\t%s\n", p.Ref, p.Task, p.Commits, p.FilesChanged, p.Insertions, p.Deletions, p.PushedAt, p.TokenPrefix)
			}
			return tw.Flush()
		},
	}
}

func gatePromoteCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:      "promote",
		Usage:     "push PROJECT's mirror REF upstream (to --to BRANCH, default the same name) with the project key; fast-forward only unless --force",
		ArgsUsage: "PROJECT REF",
		Flags: append(mirrorFlags(),
			&ucli.StringFlag{Name: "to", Usage: "upstream branch to update (default: REF's own name)"},
			&ucli.BoolFlag{Name: "force", Usage: "overwrite the upstream branch even when it is not a fast-forward"}),
		Action: func(c *ucli.Context) error {
			project, ref, err := projectRef(c, "promote", "terok-sandbox gate promote myproj terok/t1/fix --to main")
			if err != nil {
				return err
			}
			to := c.String("to")
			if to == "" {
				to = ref
			}
			if to, err = mirror.FullRef(to); err != nil {
				return UsageErrorf("--to: %v; e.g. --to main", err)
			}
			m, err := mirrorFor(c, d, project)
			if err != nil {
				return err
			}
			res, perr := m.Promote(c.Context, ref, to, c.Bool("force"))
			rec := audit.Record{Event: "promote", Fields: map[string]any{
				"refs": []map[string]string{{"ref": to, "old": res.OldID, "new": res.ID}}, "from": ref,
				"forced": res.Forced, "upstream": res.Upstream}}
			if err := operatorAudit(c, d, project, rec, perr); err != nil {
				return err
			}
			if perr != nil {
				return perr
			}
			if c.Bool("json") {
				return writeJSON(d.Stdout, res)
			}
			fmt.Fprintf(d.Stdout, "Promoted %s (%s) to %s of %s.\n", ref, short(res.ID), to, res.Upstream)
			return nil
		},
	}
}

func gateRejectCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:      "reject",
		Usage:     "delete REF from PROJECT's mirror (a task's push that will not be promoted)",
		ArgsUsage: "PROJECT REF",
		Flags:     mirrorFlags(),
		Action: func(c *ucli.Context) error {
			project, ref, err := projectRef(c, "reject", "terok-sandbox gate reject myproj terok/t1/fix")
			if err != nil {
				return err
			}
			m, err := mirrorFor(c, d, project)
			if err != nil {
				return err
			}
			id, rerr := m.Reject(c.Context, ref)
			zero := strings.Repeat("0", len(id))
			rec := audit.Record{Event: "reject", Fields: map[string]any{"refs": []map[string]string{{"ref": ref, "old": id, "new": zero}}}}
			if err := operatorAudit(c, d, project, rec, rerr); err != nil {
				return err
			}
			if rerr != nil {
				return rerr
			}
			if c.Bool("json") {
				return writeJSON(d.Stdout, map[string]string{"ref": ref, "id": id})
			}
			fmt.Fprintf(d.Stdout, "Rejected %s (%s): deleted from the mirror.\n", ref, short(id))
			return nil
		},
	}
}

func short(id string) string { return id[:min(len(id), 12)] }

// projectRef reads PROJECT REF; REF may be a branch name (refs/heads/ is added).
func projectRef(c *ucli.Context, verb, example string) (string, string, error) {
	if c.NArg() != 2 {
		return "", "", UsageErrorf("expected PROJECT and REF, e.g. %s", example)
	}
	project := c.Args().Get(0)
	if err := checkProject(project); err != nil {
		return "", "", err
	}
	ref, err := mirror.FullRef(c.Args().Get(1))
	if err != nil {
		return "", "", UsageErrorf("%s: %v; e.g. %s", verb, err, example)
	}
	return project, ref, nil
}

// operatorAudit writes the record of an operator's review action to the
// gate's audit file (channel gate; docs/audit.md, Channel gate), unless
// audit = false. A record that cannot be written fails the command only
// when the action itself succeeded (the operator must know it is missing).
func operatorAudit(c *ucli.Context, d Deps, project string, rec audit.Record, actionErr error) error {
	cfg, err := loadConfig(c, d)
	if err != nil {
		return err
	}
	if !cfg.Audit {
		return nil
	}
	rec.Channel, rec.Project, rec.Outcome = "gate", project, "ok"
	rec.Fields["operator"] = true
	if actionErr != nil {
		rec.Outcome, rec.Reason = "error", "failed"
		rec.Fields["error"] = actionErr.Error()
	}
	w, err := audit.Open(cfg.AuditFile("gate"), audit.Options{})
	if err == nil {
		err = w.Write(rec)
	}
	if err != nil && actionErr == nil {
		return fmt.Errorf("%s done, but its audit record was not written: %w", rec.Event, err)
	}
	return nil
}
