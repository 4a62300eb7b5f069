package cli

// Argument helpers every command uses: repeated flags, positionals before
// flags (cmdArgs), and the name and id checks that make a bad argument a
// usage error.

import (
	"errors"
	"flag"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	ucli "github.com/urfave/cli/v2"

	"terok.dev/sandbox/common/names"
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

// cmdArgs lets positional arguments come before flags, as in
// `logs NAME --until-ready --timeout 60` (urfave/cli v2 stops parsing flags
// at the first argument). Flags after the positionals win.
type cmdArgs struct {
	c       *ucli.Context
	set     *flag.FlagSet
	pos     []string
	tailSet map[string]bool
}

func parseArgs(c *ucli.Context) (*cmdArgs, error) {
	a := &cmdArgs{c: c, set: flag.NewFlagSet(c.Command.Name, flag.ContinueOnError), tailSet: map[string]bool{}}
	a.set.SetOutput(io.Discard)
	for _, f := range c.Command.Flags {
		if err := f.Apply(a.set); err != nil {
			return nil, err
		}
	}
	args := c.Args().Slice()
	for len(args) > 0 {
		if args[0] == "--" {
			a.pos = append(a.pos, args[1:]...)
			break
		}
		if strings.HasPrefix(args[0], "-") && args[0] != "-" {
			if err := a.set.Parse(args); err != nil {
				if errors.Is(err, flag.ErrHelp) {
					return nil, ucli.ShowCommandHelp(c, c.Command.Name)
				}
				return nil, UsageErrorf("%v", err)
			}
			rest := a.set.Args()
			consumed := args[:len(args)-len(rest)]
			args = rest
			if len(consumed) > 0 && consumed[len(consumed)-1] == "--" {
				a.pos = append(a.pos, rest...)
				break
			}
			continue
		}
		a.pos = append(a.pos, args[0])
		args = args[1:]
	}
	a.set.Visit(func(f *flag.Flag) { a.tailSet[f.Name] = true })
	return a, nil
}

// tail returns the value of a flag given after the positionals, if any.
func (a *cmdArgs) tail(name string) (any, bool) {
	for _, f := range a.c.Command.Flags {
		names := f.Names()
		if !slices.Contains(names, name) {
			continue
		}
		for _, n := range names {
			if a.tailSet[n] {
				if g, ok := a.set.Lookup(n).Value.(flag.Getter); ok {
					return g.Get(), true
				}
			}
		}
	}
	return nil, false
}

func (a *cmdArgs) Bool(name string) bool {
	if v, ok := a.tail(name); ok {
		b, _ := v.(bool)
		return b
	}
	return a.c.Bool(name)
}

func (a *cmdArgs) String(name string) string {
	if v, ok := a.tail(name); ok {
		s, _ := v.(string)
		return s
	}
	return a.c.String(name)
}

func (a *cmdArgs) Int(name string) int {
	if v, ok := a.tail(name); ok {
		i, _ := v.(int)
		return i
	}
	return a.c.Int(name)
}

func (a *cmdArgs) IsSet(name string) bool {
	_, ok := a.tail(name)
	return ok || a.c.IsSet(name)
}

// Seconds reads a "--timeout S" value: seconds, 0 or absent = none.
func (a *cmdArgs) Seconds(name string) (time.Duration, error) {
	v := a.c.Float64(name)
	if t, ok := a.tail(name); ok {
		v, _ = t.(float64)
	}
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
