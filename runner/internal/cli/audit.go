package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	ucli "github.com/urfave/cli/v2"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/common/names"
	"terok.dev/sandbox/runner/internal/auditview"
	"terok.dev/sandbox/runner/internal/podman"
)

func auditCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:      "audit",
		Usage:     "one task's audit timeline: gate, credential proxy, SSH agent and shield records in time order",
		ArgsUsage: "TASK",
		Description: "Merges the daemons' audit files and the shield records of the task's containers " +
			"(docs/audit.md, The audit command). Examples:\n" +
			"   terok-sandbox audit t1 --project demo\n" +
			"   terok-sandbox audit t1 --since 2h --json\n" +
			"   terok-sandbox audit t1 --follow\n" +
			"   terok-sandbox audit t1 --summary",
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "project", Usage: "only records of this project id"},
			&ucli.StringFlag{Name: "since", Usage: "only records from this time: RFC 3339, a date (YYYY-MM-DD) or a duration before now (90m)"},
			&ucli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "after the records so far, print new ones as they land (Ctrl-C ends)"},
			&ucli.BoolFlag{Name: "summary", Usage: "counts per channel and outcome, reasons, top destinations, bytes"},
			jsonFlag(),
		},
		Action: func(c *ucli.Context) error { return runAudit(c, d) },
	}
}

func runAudit(c *ucli.Context, d Deps) error {
	args := c.Args().Slice()
	if len(args) != 1 {
		return UsageErrorf("audit needs one TASK (got %d arguments), e.g. terok-sandbox audit t1 --project demo", len(args))
	}
	task, project := args[0], c.String("project")
	if err := names.ValidateTaskID(task); err != nil {
		return UsageErrorf("%v", err)
	}
	if project != "" {
		if err := names.ValidateProjectID(project); err != nil {
			return UsageErrorf("%v", err)
		}
	}
	f := auditview.Filter{Task: task, Project: project}
	if c.IsSet("since") {
		t, err := auditview.ParseSince(c.String("since"), time.Now())
		if err != nil {
			return UsageErrorf("%v", err)
		}
		f.Since = t
	}
	if c.Bool("summary") && c.Bool("follow") {
		return UsageErrorf("--summary counts the records so far; it does not combine with --follow")
	}
	cfg, err := loadConfig(c, d)
	if err != nil {
		return err
	}
	warn := func(m string) { fmt.Fprintf(d.Stderr, "Warning: %s\n", m) }

	containers, err := auditview.TaskContainers(c.Context, podmanFor(d), cfg, task, project)
	if err != nil {
		// Without podman the daemon files still answer; the shield
		// records of containers it would have named are searched by task.
		if !errors.Is(err, podman.ErrNotFound) {
			warn(fmt.Sprintf("listing the task's containers: %v", err))
		}
	}
	dirs := make([]string, 0, len(containers))
	for _, ct := range containers {
		dirs = append(dirs, ct.TaskDir)
	}
	srcs := append(auditview.DaemonSources(cfg), auditview.ShieldSources(cfg, dirs, true)...)

	if c.Bool("follow") {
		return followAudit(c.Context, d, srcs, f, len(containers) > 0, c.Bool("json"))
	}
	recs, err := auditview.Collect(srcs, f, warn)
	if err != nil {
		return err
	}
	if len(recs) == 0 && len(containers) == 0 {
		return unknownTask(task, project, f)
	}
	if c.Bool("summary") {
		s := auditview.Summarize(task, project, recs)
		if c.Bool("json") {
			return writeJSON(d.Stdout, s)
		}
		return auditview.WriteSummary(d.Stdout, s)
	}
	if !c.Bool("json") {
		fmt.Fprintln(d.Stdout, auditview.TableHeader())
	}
	for _, r := range recs {
		if err := printRecord(d, r, c.Bool("json")); err != nil {
			return err
		}
	}
	return nil
}

func unknownTask(task, project string, f auditview.Filter) error {
	who := "task " + task
	if project != "" {
		who += " of project " + project
	}
	since := ""
	if !f.Since.IsZero() {
		since = " since " + f.Since.UTC().Format(time.RFC3339)
	}
	return fmt.Errorf("no audit record%s and no container for %s (check the task id with `terok-sandbox ps --project P`, and that audit is on: `audit = true` in the config)", since, who)
}

func printRecord(d Deps, r audit.Record, asJSON bool) error {
	if asJSON {
		return auditview.WriteJSONLine(d.Stdout, r)
	}
	_, err := fmt.Fprintln(d.Stdout, auditview.FormatRow(r))
	return err
}

// followAudit prints the records so far, then new ones until SIGINT or
// SIGTERM. A task that has no record and no container when the history is
// read is unknown (exit 1), as without --follow.
func followAudit(parent context.Context, d Deps, srcs []auditview.Source, f auditview.Filter, haveContainer, asJSON bool) error {
	ctx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	defer stop()
	warn := func(m string) { fmt.Fprintf(d.Stderr, "Warning: %s\n", m) }
	// Whether the history is empty decides "unknown task" before anything
	// is printed; Collect reads the same files Follow then streams.
	if !haveContainer {
		recs, err := auditview.Collect(srcs, f, nil)
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			return unknownTask(f.Task, f.Project, f)
		}
	}
	if !asJSON {
		fmt.Fprintln(d.Stdout, auditview.TableHeader())
	}
	return auditview.Follow(ctx, srcs, f, func(r audit.Record) error { return printRecord(d, r, asJSON) }, warn)
}
