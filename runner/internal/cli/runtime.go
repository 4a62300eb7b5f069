package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"

	ucli "github.com/urfave/cli/v2"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/common/names"
	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/runner/internal/doctor"
	"terok.dev/sandbox/runner/internal/launch"
	"terok.dev/sandbox/runner/internal/podman"
	"terok.dev/sandbox/runner/sandbox"
)

// runtimeCommands are run, logs, wait, stop, state, ps, free-port.
func runtimeCommands(d Deps) []*ucli.Command {
	return []*ucli.Command{runCommand(d), logsCommand(d), waitCommand(d), stopCommand(d), stateCommand(d), psCommand(d), freePortCommand(d)}
}

func runCommand(d Deps) *ucli.Command {
	env, vol := &listFlag{}, &listFlag{}
	return &ucli.Command{
		Name:      "run",
		Usage:     "launch a hardened detached container",
		ArgsUsage: "[--] [COMMAND [ARG...]]",
		Description: "Builds the run specification from --spec FILE.json (fields of docs/runner.md, `run`; env is an object)\n" +
			"and the flags (flags win: scalars replace, -e sets single variables, -v/--extra-arg/COMMAND replace the\n" +
			"file's lists), prints the redacted podman command and runs it. Without the shield firewall the launch is\n" +
			"refused unless shield_bypass is set in the config file or --shield-bypass is given.",
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "spec", Usage: "run specification JSON file"},
			&ucli.StringFlag{Name: "name", Usage: "container name (container_name)"},
			&ucli.StringFlag{Name: "image", Usage: "image reference"},
			&ucli.StringFlag{Name: "task-dir", Usage: "task directory (default <state dir>/tasks/<name>)"},
			&ucli.StringFlag{Name: "project", Usage: "project id: labels the container (" + launch.LabelProject + ")"},
			&ucli.StringFlag{Name: "task", Usage: "task id: labels the container (" + launch.LabelTask + ")"},
			// Short and long forms share one list (no urfave aliases: those
			// replay every value into the main name and duplicate it).
			&ucli.GenericFlag{Name: "env", Value: env, Usage: "NAME=VALUE (repeatable)"},
			&ucli.GenericFlag{Name: "e", Value: env, Usage: "same as --env"},
			&ucli.GenericFlag{Name: "volume", Value: vol, Usage: "host:container[:options] (repeatable)"},
			&ucli.GenericFlag{Name: "v", Value: vol, Usage: "same as --volume"},
			&ucli.GenericFlag{Name: "extra-arg", Value: &listFlag{}, Usage: "extra podman run argument, verbatim (repeatable)"},
			&ucli.BoolFlag{Name: "gpu", Usage: "add the NVIDIA CDI GPU arguments"},
			&ucli.BoolFlag{Name: "unrestricted", Usage: "drop --security-opt no-new-privileges"},
			&ucli.BoolFlag{Name: "shield-bypass", Usage: "DANGEROUS: run without any egress firewall"},
			&ucli.StringFlag{Name: "shield-mode", Value: string(sandbox.ShieldEnforce), Usage: "shield mode: enforce (default-deny), learn (public destinations allowed and recorded) or interactive"},
			&ucli.StringFlag{Name: "pre-start-exec", Usage: "shell command run before podman (failure aborts the launch)"},
			&ucli.StringFlag{Name: "post-start-exec", Usage: "shell command run after a successful launch"},
			quietFlag(),
			jsonFlag(),
		},
		Action: func(c *ucli.Context) error { return runAction(c, d) },
	}
}

func runAction(c *ucli.Context, d Deps) error {
	launch.Mark(c.Context, "cli: parse arguments")
	cfg, err := loadConfig(c, d)
	if err != nil {
		return err
	}
	launch.Mark(c.Context, "cli: load config")
	if c.Bool("shield-bypass") {
		cfg.ShieldBypass = true
	}
	spec, err := specFromCLI(c, cfg)
	if err != nil {
		return err
	}
	mode, err := shieldbundle.ParseMode(c.String("shield-mode"))
	if err != nil {
		return UsageErrorf("--shield-mode: %v", err)
	}
	spec.ShieldMode = sandbox.ShieldMode(mode)
	if spec.ShieldMode == sandbox.ShieldLearn {
		// On stderr even with --json: the operator must see it.
		fmt.Fprintf(d.Stderr, "\n%s\n\n", sandbox.LearnWarning)
	}
	out := d.Stdout
	if c.Bool("json") {
		out = d.Stderr // keep stdout pure JSON
	}
	hooks := sandbox.LifecycleHooks{}
	if cmd := c.String("pre-start-exec"); cmd != "" {
		hooks.PreStart = func() error { return execHook(c.Context, d, out, "pre-start", cmd, spec.ContainerName) }
	}
	if cmd := c.String("post-start-exec"); cmd != "" {
		hooks.PostStart = func() error { return execHook(c.Context, d, out, "post-start", cmd, spec.ContainerName) }
	}
	sb := sandbox.New(cfg, sandbox.Options{Env: d.Env, Log: d.Log, Stdout: out, Progress: progressWriter(d, !c.Bool("quiet"))})
	id, err := sb.Run(c.Context, spec, hooks)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return writeJSON(d.Stdout, map[string]string{"container_id": id, "name": spec.ContainerName, "image": spec.Image})
	}
	fmt.Fprintln(d.Stdout, id)
	launch.Mark(c.Context, "cli: done")
	return nil
}

// specFromCLI merges --spec FILE with the flags (flags win).
func specFromCLI(c *ucli.Context, cfg config.Config) (sandbox.RunSpec, error) {
	var fs launch.FileSpec
	if path := c.String("spec"); path != "" {
		data, err := readLimited(path, launch.MaxSpecBytes)
		if err != nil {
			return sandbox.RunSpec{}, fmt.Errorf("read run spec: %w", err)
		}
		if fs, err = launch.ParseSpecJSON(data); err != nil {
			return sandbox.RunSpec{}, fmt.Errorf("%s: %w", path, err)
		}
	}
	if c.IsSet("name") {
		fs.ContainerName = c.String("name")
	}
	if c.IsSet("image") {
		fs.Image = c.String("image")
	}
	if c.IsSet("task-dir") {
		fs.TaskDir = c.String("task-dir")
	}
	if c.IsSet("project") {
		fs.Project = c.String("project")
	}
	if c.IsSet("task") {
		fs.Task = c.String("task")
	}
	if fs.Project != "" {
		if err := names.ValidateProjectID(fs.Project); err != nil {
			return sandbox.RunSpec{}, UsageErrorf("--project: %v", err)
		}
	}
	if fs.Task != "" {
		if err := names.ValidateTaskID(fs.Task); err != nil {
			return sandbox.RunSpec{}, UsageErrorf("--task: %v", err)
		}
	}
	if c.IsSet("gpu") {
		fs.GPUEnabled = c.Bool("gpu")
	}
	if c.IsSet("unrestricted") {
		fs.Unrestricted = c.Bool("unrestricted")
	}
	if v := listOf(c, "volume"); len(v) > 0 {
		fs.Volumes = v
	}
	if v := listOf(c, "extra-arg"); len(v) > 0 {
		fs.ExtraArgs = v
	}
	if c.Args().Present() {
		fs.Command = c.Args().Slice()
	}
	env := map[string]string{}
	for _, e := range fs.Env {
		env[e.Name] = e.Value
	}
	for _, kv := range listOf(c, "env") {
		name, value, ok := strings.Cut(kv, "=")
		if !ok {
			return sandbox.RunSpec{}, UsageErrorf("-e/--env %q: expected NAME=VALUE", kv)
		}
		if err := launch.ValidEnvName(name); err != nil {
			return sandbox.RunSpec{}, UsageErrorf("-e/--env: %v", err)
		}
		env[name] = value
	}
	if fs.ContainerName == "" {
		return sandbox.RunSpec{}, UsageErrorf("a container name is required (--name or container_name in --spec)")
	}
	if _, err := checkName(fs.ContainerName); err != nil {
		return sandbox.RunSpec{}, err
	}
	if fs.Image == "" {
		return sandbox.RunSpec{}, UsageErrorf("an image is required (--image or image in --spec)")
	}
	if fs.TaskDir == "" {
		var err error
		if fs.TaskDir, err = sandbox.DefaultTaskDir(cfg, fs.ContainerName); err != nil {
			return sandbox.RunSpec{}, UsageErrorf("%v", err)
		}
	}
	spec := sandbox.RunSpec{
		ContainerName: fs.ContainerName, Image: fs.Image, Volumes: fs.Volumes, Command: fs.Command,
		TaskDir: fs.TaskDir, GPUEnabled: fs.GPUEnabled, ExtraArgs: fs.ExtraArgs, Unrestricted: fs.Unrestricted,
		Project: fs.Project, Task: fs.Task,
	}
	envNames := make([]string, 0, len(env))
	for n := range env {
		envNames = append(envNames, n)
	}
	sort.Strings(envNames)
	for _, n := range envNames {
		spec.Env = append(spec.Env, sandbox.EnvVar{Name: n, Value: env[n]})
	}
	return spec, nil
}

func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return data, nil
}

// execHook runs a CLI lifecycle hook through /bin/sh -c with the container
// name in TEROK_CONTAINER_NAME; its output goes to the command's output.
func execHook(ctx context.Context, d Deps, out io.Writer, which, command, name string) error {
	if ctx == nil {
		ctx = context.Background()
	}
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Env = append(os.Environ(), "TEROK_CONTAINER_NAME="+name, "TEROK_HOOK="+which)
	cmd.Stdout, cmd.Stderr, cmd.Stdin = out, d.Stderr, nil
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s command %q: %w", which, command, err)
	}
	return nil
}

func logsCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:      "logs",
		Usage:     "print a container's logs; --until-ready follows them until the ready marker",
		ArgsUsage: "NAME",
		Flags: []ucli.Flag{
			&ucli.BoolFlag{Name: "until-ready", Usage: "follow until a line contains the marker (exit 0), the timeout (124) or the end of the log (1)"},
			&ucli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "follow the log"},
			&ucli.IntFlag{Name: "tail", Value: -1, Usage: "start with the last N lines (-1: all)"},
			&ucli.StringFlag{Name: "since", Usage: "only lines since a timestamp or a duration ago (podman's --since, e.g. 10m)"},
			&ucli.StringFlag{Name: "marker", Value: sandbox.ReadyMarker, Usage: "ready marker text"},
			&ucli.Float64Flag{Name: "timeout", Usage: "seconds to wait (0: no limit)"},
			jsonFlag(),
		},
		Action: func(c *ucli.Context) error {
			a := parseArgs(c)
			name, err := a.oneName()
			if err != nil {
				return err
			}
			timeout, err := a.Seconds("timeout")
			if err != nil {
				return err
			}
			if a.IsSet("marker") && a.String("marker") == "" {
				return UsageErrorf("--marker must not be empty")
			}
			out := d.Stdout
			if a.Bool("json") {
				out = d.Stderr
			}
			var ready func(string) bool
			follow := a.Bool("follow")
			if a.Bool("until-ready") {
				ready, follow = podman.ContainsMarker(a.String("marker")), true
			}
			opts := podman.LogOptions{Follow: follow, Tail: a.Int("tail"), Since: a.String("since")}
			if opts.Tail < -1 {
				return UsageErrorf("--tail must be -1 (all) or a number of lines >= 0, got %d", opts.Tail)
			}
			if a.IsSet("since") && strings.TrimSpace(opts.Since) == "" {
				return UsageErrorf("--since must not be empty")
			}
			outcome, err := podmanFor(d).StreamLogsWith(c.Context, out, name, opts, timeout, ready)
			if err != nil {
				return missingOr(c.Context, d, name, err)
			}
			if a.Bool("json") {
				if err := writeJSON(d.Stdout, map[string]any{"name": name, "outcome": outcome.String(), "ready": outcome == podman.LogReady}); err != nil {
					return err
				}
			}
			if !a.Bool("until-ready") {
				return nil
			}
			switch outcome {
			case podman.LogReady:
				return nil
			case podman.LogTimeout:
				return ExitWith(podman.ExitTimeout, fmt.Sprintf("Timed out after %v waiting for %q in the logs of %s.", timeout, a.String("marker"), name))
			default:
				return ExitWith(ExitError, fmt.Sprintf("Error: the logs of %s ended without %q (check `terok-sandbox state %s`).", name, a.String("marker"), name))
			}
		},
	}
}

func waitCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:      "wait",
		Usage:     "wait for a container to exit; exit status = the container's (124 on timeout)",
		ArgsUsage: "NAME",
		Flags:     []ucli.Flag{&ucli.Float64Flag{Name: "timeout", Usage: "seconds to wait (0: no limit)"}, jsonFlag()},
		Action: func(c *ucli.Context) error {
			a := parseArgs(c)
			name, err := a.oneName()
			if err != nil {
				return err
			}
			timeout, err := a.Seconds("timeout")
			if err != nil {
				return err
			}
			if _, err := exec.LookPath("podman"); err != nil {
				return podman.ErrNotFound
			}
			code := podmanFor(d).Wait(c.Context, name, timeout)
			if code == podmanErrorStatus {
				// 125 is podman's own failure; a container that exited
				// with it still exists.
				if err := missingOr(c.Context, d, name, nil); err != nil {
					return err
				}
			}
			if a.Bool("json") {
				if err := writeJSON(d.Stdout, map[string]any{"name": name, "exit_code": code, "timed_out": code == podman.ExitTimeout}); err != nil {
					return err
				}
			}
			switch {
			case code == 0:
				return nil
			case code == podman.ExitTimeout:
				return ExitWith(code, fmt.Sprintf("Timed out after %v waiting for %s to exit.", timeout, name))
			default:
				return ExitWith(code, "")
			}
		},
	}
}

func stopCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:      "stop",
		Usage:     "force-remove containers and stop their shield processes",
		ArgsUsage: "NAME...",
		Description: "Runs `podman rm -f NAME`, then stops what the container's shield left behind (its DNS resolver)\n" +
			"in the task directory of its shield annotation and in <state dir>/tasks/NAME, also when the container\n" +
			"no longer exists (a start that failed before the shield's poststop hook could run). A name with neither a\n" +
			"container nor shield state is an error (exit 1) after the others are stopped; a missing or failing podman\n" +
			"is not (task deletion must not fail on it).",
		Flags: []ucli.Flag{jsonFlag()},
		Action: func(c *ucli.Context) error {
			a := parseArgs(c)
			if len(a.pos) == 0 {
				return UsageErrorf("stop needs at least one container name")
			}
			stopped := a.pos
			for _, n := range stopped {
				if _, err := checkName(n); err != nil {
					return err
				}
			}
			cfg, err := loadConfig(c, d)
			if err != nil {
				// Removing the containers must not depend on a readable
				// config; the cleanup then looks only where their
				// annotations point and under the default state dir.
				fmt.Fprintf(d.Stderr, "Warning: %v; using the default configuration for the cleanup\n", err)
				cfg = config.Defaults(d.Env)
			}
			out := d.Stdout
			if a.Bool("json") {
				out = d.Stderr
			}
			missing := newSandbox(cfg, d, out).StopExisting(c.Context, a.pos)
			stopped = slices.DeleteFunc(slices.Clone(a.pos), func(n string) bool { return slices.Contains(missing, n) })
			if a.Bool("json") {
				if err := writeJSON(d.Stdout, map[string]any{"stopped": nonNil(stopped), "missing": nonNil(missing)}); err != nil {
					return err
				}
			}
			if len(missing) > 0 {
				return fmt.Errorf("no such container: %s", strings.Join(missing, ", "))
			}
			return nil
		},
	}
}

func stateCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:      "state",
		Usage:     "print a container's state (running, exited, …)",
		ArgsUsage: "NAME",
		Flags:     []ucli.Flag{jsonFlag()},
		Action: func(c *ucli.Context) error {
			a := parseArgs(c)
			name, err := a.oneName()
			if err != nil {
				return err
			}
			ctr, err := podmanFor(d).Inspect(c.Context, name)
			if err == nil && ctr.Status == "" {
				err = fmt.Errorf("podman reported no state for %s", name)
			}
			if a.Bool("json") {
				var v any
				if err == nil {
					v = ctr.Status
				}
				if jerr := writeJSON(d.Stdout, map[string]any{"name": name, "state": v}); jerr != nil {
					return jerr
				}
			} else if err == nil {
				fmt.Fprintln(d.Stdout, ctr.Status)
			}
			if errors.Is(err, podman.ErrNoSuchContainer) {
				return fmt.Errorf("no such container: %s", name)
			}
			return err
		},
	}
}

func psCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:  "ps",
		Usage: "list the runner's containers (by label) with their states",
		Description: "Without --prefix: every container carrying the " + launch.LabelRunnerVersion + " label (all the runner\n" +
			"launched); --project narrows that to one project's. With --prefix P: the containers named P-…, labelled or not.\n" +
			"--json prints podman's own `ps --format json` objects, sorted by name.",
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "prefix", Usage: "container name prefix (a '-' follows it)"},
			&ucli.StringFlag{Name: "project", Usage: "only containers labelled with this project id"},
			jsonFlag(),
		},
		Action: func(c *ucli.Context) error {
			if c.NArg() > 0 {
				return UsageErrorf("ps takes no arguments")
			}
			var filters []string
			prefix := c.String("prefix")
			if c.IsSet("prefix") {
				if err := names.ValidateContainerName(prefix); err != nil {
					return UsageErrorf("--prefix: %v", err)
				}
				filters = append(filters, podman.NameFilter(prefix))
			} else {
				filters = append(filters, "label="+launch.LabelRunnerVersion)
			}
			if c.IsSet("project") {
				if err := names.ValidateProjectID(c.String("project")); err != nil {
					return UsageErrorf("--project: %v", err)
				}
				filters = append(filters, "label="+launch.LabelProject+"="+c.String("project"))
			}
			entries, err := podmanFor(d).List(c.Context, filters...)
			if err != nil {
				return err
			}
			// Podman's filter is the first guard; these are the second.
			entries = slices.DeleteFunc(entries, func(e podman.PsEntry) bool {
				if c.IsSet("prefix") && !strings.HasPrefix(e.Name(), prefix+"-") {
					return true
				}
				if _, ok := e.Labels[launch.LabelRunnerVersion]; !c.IsSet("prefix") && !ok {
					return true
				}
				return c.IsSet("project") && e.Labels[launch.LabelProject] != c.String("project")
			})
			sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
			if c.Bool("json") {
				raws := make([]json.RawMessage, 0, len(entries))
				for _, e := range entries {
					raws = append(raws, e.Raw)
				}
				return writeJSON(d.Stdout, raws)
			}
			for _, e := range entries {
				fmt.Fprintf(d.Stdout, "%s %s\n", e.Name(), e.State)
			}
			return nil
		},
	}
}

// podmanErrorStatus is podman's exit status when podman itself failed.
const podmanErrorStatus = 125

// missingOr returns "no such container" when podman knows no container
// name, else err: asked only after a command failed, so the common path
// costs no extra podman call.
func missingOr(ctx context.Context, d Deps, name string, err error) error {
	if errors.Is(err, podman.ErrNotFound) {
		return err
	}
	if _, ierr := podmanFor(d).Inspect(ctx, name); errors.Is(ierr, podman.ErrNoSuchContainer) {
		return fmt.Errorf("no such container: %s", name)
	}
	return err
}

// nonNil makes an empty list print as [] in JSON, not null.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func freePortCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:  "free-port",
		Usage: "print a currently free TCP port",
		Flags: []ucli.Flag{&ucli.StringFlag{Name: "host", Value: "127.0.0.1", Usage: "address to probe"}, jsonFlag()},
		Action: func(c *ucli.Context) error {
			port, err := podman.FindFreePort(c.String("host"))
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return writeJSON(d.Stdout, map[string]int{"port": port})
			}
			fmt.Fprintln(d.Stdout, port)
			return nil
		},
	}
}

// doctorCommand is docs/runner.md, Doctor.
func doctorCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:  "doctor",
		Usage: "check that the host services answer (exit 2 on error, 1 on warning)",
		Flags: []ucli.Flag{jsonFlag()},
		Action: func(c *ucli.Context) error {
			if c.NArg() > 0 {
				return UsageErrorf("doctor takes no arguments")
			}
			cfg, err := loadConfig(c, d)
			if err != nil {
				return err
			}
			checks := doctor.StandaloneChecks(cfg, d.Env.EUID)
			results := doctor.RunStandalone(c.Context, checks, doctor.ProbeTimeout)
			if c.Bool("json") {
				if err := writeJSON(d.Stdout, results); err != nil {
					return err
				}
			} else {
				doctor.Format(d.Stdout, results)
			}
			if code := doctor.ExitCode(results); code != 0 {
				return ExitWith(code, "")
			}
			return nil
		},
	}
}
