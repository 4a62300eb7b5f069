package cli

// Argument helpers every command uses: repeated flags, the positionals
// (cmdArgs; flag placement is reorderArgs' job), and the name and id checks
// that make a bad argument a usage error.

import (
	"math"
	"strings"
	"time"

	ucli "github.com/urfave/cli/v2"

	"terok.dev/sandbox/common/names"
	"terok.dev/sandbox/common/taskend"
)

// listFlag collects every occurrence of a repeated flag verbatim. (urfave's
// StringSliceFlag splits at commas, which would break volume options such
// as "ro,z" and env values.)
type listFlag struct{ vals []string }

func (l *listFlag) Set(v string) error { l.vals = append(l.vals, v); return nil }
func (l *listFlag) String() string     { return strings.Join(l.vals, ", ") }

func listOf(c *ucli.Context, name string) []string {
	if l, ok := c.Generic(name).(*listFlag); ok && l != nil {
		return append([]string(nil), l.vals...)
	}
	return nil
}

// cmdArgs is a command's parsed arguments. Flags may follow the positionals
// (`logs NAME --until-ready --timeout 60`): reorderArgs, the one place that
// handles that, has moved them in front before urfave/cli parses, so the
// context's flag values are already final here and pos is what is left.
type cmdArgs struct {
	c   *ucli.Context
	pos []string
}

// containerFlag is the --container of the token create commands: "" or a
// container name (docs/runner.md, Names); a bad one is a usage error.
func containerFlag(fa *cmdArgs) (string, error) {
	v := fa.String("container")
	if v == "" {
		return "", nil
	}
	if err := names.ValidateContainerName(v); err != nil {
		return "", UsageErrorf("--container: %v", err)
	}
	return v, nil
}

func parseArgs(c *ucli.Context) *cmdArgs {
	return &cmdArgs{c: c, pos: c.Args().Slice()}
}

func (a *cmdArgs) Bool(name string) bool     { return a.c.Bool(name) }
func (a *cmdArgs) String(name string) string { return a.c.String(name) }
func (a *cmdArgs) Int(name string) int       { return a.c.Int(name) }
func (a *cmdArgs) IsSet(name string) bool    { return a.c.IsSet(name) }

// Seconds reads a "--timeout S" value: seconds, 0 or absent = none.
func (a *cmdArgs) Seconds(name string) (time.Duration, error) {
	v := a.c.Float64(name)
	if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) || v > 365*24*3600 {
		return 0, UsageErrorf("--%s must be a number of seconds >= 0, got %v", name, v)
	}
	return time.Duration(v * float64(time.Second)), nil
}

// oneName is the single container name argument.
func (a *cmdArgs) oneName() (string, error) {
	if len(a.pos) != 1 {
		return "", UsageErrorf("%s needs exactly one container name", a.c.Command.Name)
	}
	return checkName(a.pos[0])
}

// checkName applies the container name rule (docs/runner.md, Names); a bad
// name is a usage error.
func checkName(name string) (string, error) {
	if err := names.ValidateContainerName(name); err != nil {
		return "", UsageErrorf("%v", err)
	}
	return name, nil
}

// checkProjectTask applies the project and task id rules (docs/runner.md,
// Names) to a token's PROJECT TASK arguments; bad ids are usage errors.
func checkProjectTask(project, task string) error {
	if err := names.ValidateProjectID(project); err != nil {
		return UsageErrorf("%v", err)
	}
	if err := names.ValidateTaskID(task); err != nil {
		return UsageErrorf("%v", err)
	}
	return nil
}

// checkProject applies the project id rule; a bad id is a usage error.
func checkProject(project string) error {
	if err := names.ValidateProjectID(project); err != nil {
		return UsageErrorf("%v", err)
	}
	return nil
}

// projectTaskFirst checks a token command's PROJECT TASK before next opens
// anything on disk (a wrong argument count is left to next to report).
func projectTaskFirst(next ucli.ActionFunc) ucli.ActionFunc {
	return func(c *ucli.Context) error {
		if c.NArg() == 2 {
			if err := checkProjectTask(c.Args().Get(0), c.Args().Get(1)); err != nil {
				return err
			}
		}
		return next(c)
	}
}

// markStarts prepares the task-ends directory before a token is bound to
// container (taskend.MarkStarts; docs/security-model.md, Tokens that die
// with their task); nothing for an unbound token.
func markStarts(c *ucli.Context, d Deps, container string) error {
	if container == "" {
		return nil
	}
	cfg, err := loadConfig(c, d)
	if err != nil {
		return err
	}
	return taskend.MarkStarts(cfg.TaskEndsDir())
}
