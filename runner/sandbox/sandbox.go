// Package sandbox is the public Go API of terok-sandbox (docs/runner.md, Go API (`terok.dev/sandbox/runner/sandbox`)): a
// Sandbox facade holding one configuration, the run specification and
// lifecycle hooks, and the runtime helpers. Every operation is also a plain
// function taking the configuration explicitly.
//
// Safe defaults: a zero RunSpec is restricted (no-new-privileges), and Run
// never starts a container without the egress firewall unless the
// configuration explicitly sets ShieldBypass.
package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/common/gatetokens"
	"terok.dev/sandbox/common/names"
	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/common/taskend"
	"terok.dev/sandbox/common/tokenid"
	"terok.dev/sandbox/common/version"
	"terok.dev/sandbox/runner/internal/firewall"
	"terok.dev/sandbox/runner/internal/launch"
	"terok.dev/sandbox/runner/internal/podman"
	"terok.dev/sandbox/runner/internal/podmaninfo"
	"terok.dev/sandbox/runner/internal/rundebug"
	"terok.dev/sandbox/runner/internal/seccomp"
)

// ReadyMarker is the log line text a task container prints when its
// workspace is ready.
const ReadyMarker = podman.ReadyMarker

// ExitTimeout is WaitForExit's result when the timeout elapsed.
const ExitTimeout = podman.ExitTimeout

// ErrPodmanNotFound is returned when podman is not installed.
var ErrPodmanNotFound = podman.ErrNotFound

// EnvVar is one container environment variable.
type EnvVar struct{ Name, Value string }

// RunSpec is everything one `podman run` needs (docs/runner.md, `run`).
type RunSpec struct {
	// ContainerName must be unique and follow the name rule of
	// common/names (docs/runner.md, Names); Run and Command refuse any
	// other name before anything touches the disk.
	ContainerName string
	Image         string
	// Env is passed in this order.
	Env []EnvVar
	// Volumes are podman volume specs host:container[:options], in order.
	Volumes []string
	// Command and arguments run in the container (may be empty).
	Command []string
	// TaskDir is the task's host directory; the shield state lives in
	// <TaskDir>/shield.
	TaskDir    string
	GPUEnabled bool
	// ExtraArgs are inserted verbatim; they are not redacted beyond the
	// -e/--env forms, so never put secrets in them in other forms.
	ExtraArgs []string
	// Unrestricted drops --security-opt no-new-privileges. The zero value
	// (false) is the safe, restricted default.
	Unrestricted bool
	// Project and Task (optional, each checked by the id rules of
	// common/names) label the container, so `ps --project` finds it
	// (docs/runner.md, Labels).
	Project, Task string
	// ShieldMode is the shield's mode for this launch (docs/shield.md,
	// Shield modes); the zero value is ShieldEnforce.
	ShieldMode ShieldMode
}

// LearnWarning is the banner of a learn-mode launch: the egress firewall
// lets public destinations through (docs/shield.md, Shield modes).
const LearnWarning = "!! SHIELD IN LEARN MODE — public destinations are ALLOWED and recorded (private ranges and the host stay refused) !!"

// ShieldMode says what the shield does with a connection to a destination
// no list names: refuse it (enforce), let a public one through and record
// it (learn), or hold it for the operator (interactive).
type ShieldMode string

// The shield modes.
const (
	ShieldEnforce     ShieldMode = shieldbundle.ModeEnforce
	ShieldLearn       ShieldMode = shieldbundle.ModeLearn
	ShieldInteractive ShieldMode = shieldbundle.ModeInteractive
)

// LifecycleHooks are optional callbacks. Run fires PreStart after the
// command is assembled and printed (an error aborts the launch) and
// PostStart after podman succeeded; PostReady and PostStop are fired by the
// caller.
type LifecycleHooks struct {
	PreStart  func() error
	PostStart func() error
	PostReady func() error
	PostStop  func() error
}

// GpuConfigError is a launch failure caused by a missing or broken NVIDIA
// CDI configuration; its Hint field holds the remediation separately.
type GpuConfigError = launch.GPUError

// LaunchError is any other failed launch (podman's message passed through,
// with a hint for a name clash or a missing image).
type LaunchError = launch.LaunchError

// GPUHint is the hint carried by GpuConfigError.
const GPUHint = launch.GPUHint

// Options are the facade's connections to the outside world. The zero value
// uses the real process environment, os.Stdout and "podman" from PATH.
type Options struct {
	// Env gives the effective uid (rootless or not) and the debug log path.
	Env config.Env
	// Log receives structured warnings; nil discards.
	Log *slog.Logger
	// Stdout receives the printed command line and the bypass warning.
	Stdout io.Writer
	// Podman is the podman executable; empty means "podman".
	Podman string
	// Progress, when not nil, receives podman run's own stderr as it
	// comes (an image pull's progress); the CLI passes its terminal.
	Progress io.Writer
}

// Sandbox holds one configuration and groups the operations. It is
// immutable and safe for concurrent use.
type Sandbox struct {
	cfg    config.Config
	env    config.Env
	log    *slog.Logger
	out    io.Writer
	podman podman.Podman
	debug  *rundebug.Log
	// progress: see Options.Progress.
	progress io.Writer
}

// New returns a facade for cfg.
func New(cfg config.Config, opts Options) *Sandbox {
	if opts.Env.Getenv == nil {
		opts.Env = config.FromOS()
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Stdout == nil {
		opts.Stdout = os.Stdout
	}
	debug := rundebug.New(opts.Env.RunnerDebugLog())
	return &Sandbox{
		cfg:      cfg.Clone(),
		env:      opts.Env,
		log:      opts.Log,
		out:      opts.Stdout,
		podman:   podman.Podman{Bin: opts.Podman, Debug: debug},
		debug:    debug,
		progress: opts.Progress,
	}
}

// Config returns (a copy of) the configuration.
func (s *Sandbox) Config() config.Config { return s.cfg.Clone() }

// rootless reports whether podman runs without root.
func (s *Sandbox) rootless() bool { return s.env.EUID != 0 }

// podmanInfo is `podman info` through the on-disk cache in the runtime dir
// (rootless podman info costs as much as the launch itself).
func (s *Sandbox) podmanInfo(ctx context.Context) podmaninfo.Info {
	return s.facts().Info(ctx, s.podman.Bin)
}

// facts is the runner's host-facts cache in the runtime dir (podman's
// facts, and which seccomp profile content was already verified).
func (s *Sandbox) facts() podman.InfoCache {
	return podman.NewInfoCache(s.cfg.RuntimeDir, s.env.Getenv, s.env.EUID)
}

// chooseFirewall is the shield adapter, or the explicit bypass when (and
// only when) ShieldBypass is set (docs/runner.md, Argument order).
func (s *Sandbox) chooseFirewall(container string) firewall.Firewall {
	if !s.cfg.ShieldBypass {
		return s.firewall()
	}
	s.log.Warn("shield bypassed: the container runs without any egress firewall",
		"container", container, "fix", "unset shield_bypass to restore the firewall")
	s.debug.Warning("run %s: shield bypassed (shield_bypass is set)", container)
	return firewall.Bypass{Out: s.out, Root: !s.rootless(), Info: s.podmanInfo}
}

// Command assembles the podman argument list for spec without running
// anything but the firewall pre-start (which may print the bypass warning).
func (s *Sandbox) Command(ctx context.Context, spec RunSpec) ([]string, error) {
	return s.command(ctx, spec, s.chooseFirewall(spec.ContainerName))
}

func (s *Sandbox) command(ctx context.Context, spec RunSpec, fw firewall.Firewall) ([]string, error) {
	// First: the shield pre-start writes files under a path derived from
	// the name.
	if err := names.ValidateContainerName(spec.ContainerName); err != nil {
		return nil, fmt.Errorf("run spec: %w", err)
	}
	p := launch.Params{
		Rootless:     s.rootless(),
		Unrestricted: spec.Unrestricted,
		GPU:          spec.GPUEnabled,
		ExtraArgs:    spec.ExtraArgs,
		Volumes:      spec.Volumes,
		Name:         spec.ContainerName,
		Image:        spec.Image,
		Command:      spec.Command,
	}
	for _, e := range spec.Env {
		p.Env = append(p.Env, launch.EnvVar{Name: e.Name, Value: e.Value})
	}
	if spec.TaskDir != "" {
		// No volume may reach the task's own shield state (its allowlist).
		p.ShieldStateDir = config.ShieldStateDir(spec.TaskDir)
	}
	if spec.Project != "" {
		if err := names.ValidateProjectID(spec.Project); err != nil {
			return nil, fmt.Errorf("run spec: %w", err)
		}
	}
	if spec.Task != "" {
		if err := names.ValidateTaskID(spec.Task); err != nil {
			return nil, fmt.Errorf("run spec: %w", err)
		}
	}
	p.Labels = launch.RunnerLabels(version.Version, spec.Project, spec.Task)
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("run spec: %w", err)
	}
	if spec.TaskDir == "" {
		return nil, errors.New("run spec: task dir is required (the shield state lives in <task dir>/shield)")
	}
	// Fail closed, before the firewall writes anything: every launch,
	// bypass included, carries the seccomp profile (docs/seccomp.md).
	p.SeccompProfile = seccomp.Path(s.cfg.ConfigDir)
	if err := seccomp.LoadMemo(p.SeccompProfile, s.env.EUID, s.facts()); err != nil {
		return nil, fmt.Errorf("launch of %s refused: %w", spec.ContainerName, err)
	}
	launch.Mark(ctx, "seccomp profile")
	mode, err := shieldbundle.ParseMode(string(spec.ShieldMode))
	if err != nil {
		return nil, fmt.Errorf("run spec: %w", err)
	}
	if mode != shieldbundle.ModeEnforce && s.cfg.ShieldBypass {
		return nil, fmt.Errorf("run spec: shield mode %s needs the shield, but shield_bypass is set", mode)
	}
	if mode == shieldbundle.ModeLearn {
		s.log.Warn("shield in learn mode: public destinations are allowed and recorded",
			"container", spec.ContainerName, "fix", "suggest a profile (shield profile suggest) and run again without --shield-mode learn")
	}
	args, err := fw.PreStart(ctx, firewall.Launch{Container: spec.ContainerName, TaskDir: spec.TaskDir, Mode: mode, Project: spec.Project, Task: spec.Task})
	if err != nil {
		return nil, fmt.Errorf("shield pre-start for %s: %w", spec.ContainerName, err)
	}
	launch.Mark(ctx, "firewall pre-start")
	p.FirewallArgs = args
	return launch.Args(p), nil
}

// Run launches a detached hardened container (docs/runner.md, Argument order) and returns
// its id. It prints `$ <redacted command>` to the facade's stdout first.
// When the firewall can verify a started container (firewall.Verifier) and
// that fails, the container is removed and Run fails: a container whose
// firewall is not in place must not keep running. When podman fails after
// it created the container, the container (if this launch created it) is
// removed and the firewall's leftovers cleaned up (firewall.Cleaner), and
// the error names the failed step (docs/runner.md, Failed starts). Errors:
// ErrPodmanNotFound, *GpuConfigError, *LaunchError, a firewall error (the
// launch is refused), a verification error, or a hook's error.
func (s *Sandbox) Run(ctx context.Context, spec RunSpec, hooks LifecycleHooks) (string, error) {
	return s.run(ctx, spec, hooks, s.chooseFirewall(spec.ContainerName))
}

func (s *Sandbox) run(ctx context.Context, spec RunSpec, hooks LifecycleHooks, fw firewall.Firewall) (string, error) {
	// This process holds the container's bound tokens alive while it
	// starts the container (docs/security-model.md, Tokens that die with
	// their task): claimed while the command is assembled, joined before
	// podman runs.
	claim := s.claimStart(ctx, spec.ContainerName)
	args, err := s.command(ctx, spec, fw)
	claimed := claim()
	if err != nil {
		s.releaseStart(spec.ContainerName, claimed)
		return "", err
	}
	id, err := s.runClaimed(ctx, spec, hooks, fw, args)
	if err != nil && id == "" {
		s.releaseStart(spec.ContainerName, claimed)
		return "", err
	}
	s.confirmStart(ctx, spec.ContainerName, claimed)
	return id, err
}

func (s *Sandbox) runClaimed(ctx context.Context, spec RunSpec, hooks LifecycleHooks, fw firewall.Firewall, args []string) (string, error) {
	line := launch.CommandLine("podman", args)
	fmt.Fprintf(s.out, "$ %s\n", line)
	s.debug.Debug("run %s: %s", spec.ContainerName, line)
	if hooks.PreStart != nil {
		if err := hooks.PreStart(); err != nil {
			return "", fmt.Errorf("pre-start hook for %s failed, container not started: %w", spec.ContainerName, err)
		}
	}
	launch.Mark(ctx, "print command")
	// An EarlyVerifier starts its check while podman works; Finish is as
	// strict as VerifyStarted.
	var early firewall.Verification
	if ev, ok := fw.(firewall.EarlyVerifier); ok {
		early = ev.BeginVerify(ctx, spec.ContainerName, spec.TaskDir)
		defer early.Stop()
	}
	started := time.Now()
	id, err := launch.ExecuteShowing(ctx, s.podman, s.progress, args, spec.ContainerName, spec.Image)
	launch.Mark(ctx, "podman run -d")
	if err != nil {
		s.debug.Warning("run %s failed: %v", spec.ContainerName, err)
		return "", s.failedStart(ctx, spec, args, fw, started, err)
	}
	s.debug.Debug("run %s: started %s", spec.ContainerName, id)
	var verr error
	verified := true
	if early != nil {
		verr = early.Finish(ctx, id)
	} else if v, ok := fw.(firewall.Verifier); ok {
		verr = v.VerifyStarted(ctx, spec.ContainerName, spec.TaskDir, id)
	} else {
		verified = false
	}
	if verr != nil {
		return "", s.removeUnverified(ctx, spec, fw, verr)
	}
	if verified {
		launch.Mark(ctx, "firewall verify")
	}
	if hooks.PostStart != nil {
		if err := hooks.PostStart(); err != nil {
			return id, fmt.Errorf("post-start hook for %s failed (the container is running; stop it with `terok-sandbox stop %s`): %w",
				spec.ContainerName, spec.ContainerName, err)
		}
	}
	return id, nil
}

// removeUnverified force-removes a container whose firewall could not be
// verified, cleans up the firewall's leftovers and builds the error. The
// removal must happen even when the caller's context has ended.
func (s *Sandbox) removeUnverified(ctx context.Context, spec RunSpec, fw firewall.Firewall, verr error) error {
	name := spec.ContainerName
	s.log.Error("shield verification failed; removing the container", "container", name, "err", verr,
		"fix", "run 'terok-sandbox shield check' and repair the shield setup")
	s.debug.Warning("run %s: shield verification failed (%v); removing the container", name, verr)
	// -t 0: an unprotected container is killed at once, not after the stop timeout.
	res, err := s.podman.ForceRemove(ctx, name)
	cleanup := s.cleanupAfter(ctx, fw, name, spec.TaskDir)
	if err != nil {
		return fmt.Errorf("shield verification failed for %s: %w; removing the container FAILED (%s): remove it now with `podman rm -f -t 0 %s`%s",
			name, verr, podman.ErrorText(res, err, "podman rm -f"), name, cleanup)
	}
	return fmt.Errorf("shield verification failed for %s: %w; the container was removed. Run 'terok-sandbox shield check' to diagnose the shield setup%s", name, verr, cleanup)
}

// failedStart handles a `podman run -d` that failed (docs/runner.md, Failed
// starts). Podman may have created the container before the failure (a
// refusing OCI hook, a command runc cannot start, a killed podman): that
// container is removed when — and only when — this launch created it
// (launch.CreatedBy), then the firewall's leftovers are cleaned up, and
// the error names the failed step and what was cleaned. A name clash is
// somebody else's container and nothing is touched.
func (s *Sandbox) failedStart(ctx context.Context, spec RunSpec, args []string, fw firewall.Firewall, started time.Time, runErr error) error {
	name := spec.ContainerName
	if errors.Is(runErr, podman.ErrNotFound) {
		return runErr
	}
	if launch.IsNameClash(runErr) {
		return launch.WithStep(runErr, launch.StepCreate, "", "")
	}
	// The caller may have given up (Ctrl-C killed podman half-way): the
	// check and the cleanup run regardless, bounded.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), podman.StopTimeout)
	defer cancel()
	created, clean := false, false
	var note string
	c, ierr := s.podman.Inspect(cctx, name)
	switch {
	case errors.Is(ierr, podman.ErrNoSuchContainer):
		// A hook may have started processes before podman removed the
		// container itself.
		note, clean = launch.NotCreatedNote(name), true
	case ierr != nil:
		note = launch.UncheckedNote(name, ierr.Error())
	case !launch.CreatedBy(c, args, launch.AnnotationIn(args, launch.AnnStateDir), started):
		note = launch.NotOursNote(name)
		s.log.Warn("failed launch: a container of the same name exists that this launch did not create; left alone",
			"container", name, "id", c.ID)
	default:
		created, clean = true, true
		if res, err := s.podman.ForceRemove(cctx, name); err != nil {
			note = launch.RemoveFailedNote(name, podman.ErrorText(res, err, "podman rm -f"))
		} else {
			note = launch.RemovedNote(name)
		}
	}
	if clean {
		note += s.cleanupAfter(cctx, fw, name, spec.TaskDir)
	}
	step := launch.FailedStep(launchDetail(runErr), created)
	var hint string
	switch step {
	case launch.StepHook:
		hint = launch.HookHint(spec.TaskDir)
	case launch.StepCommand:
		hint = launch.CommandHint(spec.Command, spec.Image)
	}
	// No structured log line: the returned error says it all and the CLI
	// prints it; the debug log keeps a trace.
	s.debug.Warning("run %s: %s failed; %s", name, step, note)
	var le *launch.LaunchError
	var ge *launch.GPUError
	if errors.As(runErr, &le) || errors.As(runErr, &ge) {
		return launch.WithStep(runErr, step, note, hint)
	}
	return fmt.Errorf("%w; %s", runErr, note)
}

// launchDetail is podman's error text inside a launch error.
func launchDetail(err error) string {
	var le *launch.LaunchError
	if errors.As(err, &le) {
		return le.Detail
	}
	var ge *launch.GPUError
	if errors.As(err, &ge) {
		return ge.Stderr
	}
	return err.Error()
}

// cleanupAfter asks the firewall to stop what it left for a container that
// is gone (firewall.Cleaner). It returns "" or, when that failed, a
// sentence (with a leading space) for the error.
func (s *Sandbox) cleanupAfter(ctx context.Context, fw firewall.Firewall, name, taskDir string) string {
	cl, ok := fw.(firewall.Cleaner)
	if !ok {
		return ""
	}
	if err := cl.Cleanup(context.WithoutCancel(ctx), name, taskDir); err != nil {
		s.log.Error("cleanup of the container's firewall state failed", "container", name, "err", err,
			"fix", "run 'terok-sandbox stop "+name+"'")
		return " " + launch.CleanupFailedNote(name, err.Error())
	}
	return ""
}

// StreamLogs follows the container's logs, printing each line to the
// facade's stdout, until readyCheck (nil: the line contains ReadyMarker)
// matches (true), the log ends or timeout (<= 0: none) elapses (false).
func (s *Sandbox) StreamLogs(ctx context.Context, container string, timeout time.Duration, readyCheck func(string) bool) bool {
	if readyCheck == nil {
		readyCheck = podman.ContainsMarker(ReadyMarker)
	}
	outcome, err := s.podman.StreamLogs(ctx, s.out, container, true, timeout, readyCheck)
	if err != nil {
		s.debug.Warning("logs %s: %v", container, err)
	}
	return outcome == podman.LogReady
}

// WaitForExit blocks until the container exits and returns its exit code;
// ExitTimeout when timeout (> 0) elapsed; 1 when podman is missing or
// answers nonsense.
func (s *Sandbox) WaitForExit(ctx context.Context, container string, timeout time.Duration) int {
	return s.podman.Wait(ctx, container, timeout)
}

// Stop force-removes the containers and then has the firewall stop what
// it left for each (firewall.Cleaner: e.g. a per-container resolver of a
// start that failed before poststop could run), ignoring every error: a
// missing podman or an already removed container must not fail task
// deletion. The cleanup runs for the task directory the container's shield
// annotation names and for the default <state_dir>/tasks/<name>, also when
// the container no longer exists. Names that break the name rule
// (docs/runner.md, Names) are skipped: no container can have them.
func (s *Sandbox) Stop(ctx context.Context, containers []string) {
	cl, _ := s.firewall().(firewall.Cleaner)
	s.stop(ctx, containers, cl)
}

// StopExisting is Stop that also returns the names for which there was
// nothing to remove: podman knows no such container and none of its task
// directories holds shield state. (A podman that is missing or fails does
// not make a name missing: the answer is unknown, and stop stays quiet.)
func (s *Sandbox) StopExisting(ctx context.Context, containers []string) (missing []string) {
	cl, _ := s.firewall().(firewall.Cleaner)
	return s.stop(ctx, containers, cl)
}

func (s *Sandbox) stop(ctx context.Context, containers []string, cl firewall.Cleaner) (missing []string) {
	for _, name := range containers {
		if err := names.ValidateContainerName(name); err != nil {
			s.log.Warn("stop: skipped", "err", err)
			missing = append(missing, name)
			continue
		}
		c, ierr := s.podman.Inspect(ctx, name)
		dirs := s.taskDirsOf(c, name)
		if errors.Is(ierr, podman.ErrNoSuchContainer) && !anyShieldState(dirs) {
			missing = append(missing, name)
		}
		s.podman.Stop(ctx, []string{name})
		// Recorded whatever podman said: the operator asked for the task to
		// end, so the tokens bound to it die now (docs/security-model.md,
		// Tokens that die with their task).
		if err := taskend.Record(s.cfg.TaskEndsDir(), taskend.End{Container: name, Reason: taskend.ReasonStopped, ID: c.ID}); err != nil {
			s.log.Error("stop: could not record the task's end; its bound tokens keep working until revoked", "container", name, "err", err)
			s.debug.Warning("stop %s: recording the task's end failed: %v", name, err)
		}
		if cl == nil {
			continue
		}
		for _, dir := range dirs {
			if err := cl.Cleanup(ctx, name, dir); err != nil {
				s.log.Warn("stop: cleanup of the container's firewall state failed", "container", name, "task_dir", dir, "err", err)
				s.debug.Warning("stop %s: cleanup in %s failed: %v", name, dir, err)
			}
		}
	}
	return missing
}

// anyShieldState reports whether one of the task directories has a shield
// state directory: leftovers stop may still have to clean up.
func anyShieldState(dirs []string) bool {
	for _, d := range dirs {
		if st, err := os.Stat(config.ShieldStateDir(d)); err == nil && st.IsDir() {
			return true
		}
	}
	return false
}

// taskDirsOf is where a container's firewall state may live: the parent of
// its shield state-dir annotation (a custom --task-dir) and the default
// task directory, without duplicates.
func (s *Sandbox) taskDirsOf(c podman.Container, name string) []string {
	var dirs []string
	if sd := c.Annotations[launch.AnnStateDir]; filepath.IsAbs(sd) && filepath.Base(sd) == "shield" {
		dirs = append(dirs, filepath.Dir(filepath.Clean(sd)))
	}
	if d, err := DefaultTaskDir(s.cfg, name); err == nil && filepath.IsAbs(d) && !slices.Contains(dirs, d) {
		dirs = append(dirs, d)
	}
	return dirs
}

// ContainerState is the lowercased podman status; ok false when unknown.
func (s *Sandbox) ContainerState(ctx context.Context, name string) (string, bool) {
	return s.podman.State(ctx, name)
}

// IsContainerRunning reports whether podman says the container runs.
func (s *Sandbox) IsContainerRunning(ctx context.Context, name string) bool {
	return s.podman.IsRunning(ctx, name)
}

// ProjectContainerStates maps "<prefix>-…" container names to their states.
func (s *Sandbox) ProjectContainerStates(ctx context.Context, prefix string) map[string]string {
	return s.podman.ProjectStates(ctx, prefix)
}

// TaskRef names one task: its project and its task id (each checked by
// the id rules of common/names). A value rather than two strings, so the
// two cannot be swapped (swapped, a gate token would open the wrong
// repository).
type TaskRef = names.TaskRef

// GateToken is a gate access token (the Basic-auth user name of a gate
// URL); a type of its own so that GateURL's repository path and token
// cannot be swapped.
type GateToken string

// CreateToken creates a gate token for t.
func (s *Sandbox) CreateToken(t TaskRef) (GateToken, error) {
	tok, err := gatetokens.NewStore(s.cfg, s.log).Create(t)
	if err != nil {
		return "", err
	}
	s.debug.Debug("gate token %s created for %s/%s", tokenid.Show(tok), t.Project, t.Task)
	return GateToken(tok), nil
}

// CreateBoundToken is CreateToken for a token that dies with container: once
// its end is recorded (Stop, or the shield hook's poststop) the gate refuses
// it (docs/security-model.md, Tokens that die with their task).
func (s *Sandbox) CreateBoundToken(t TaskRef, container string) (GateToken, error) {
	if err := taskend.MarkStarts(s.cfg.TaskEndsDir()); err != nil {
		return "", err
	}
	tok, err := gatetokens.NewStore(s.cfg, s.log).CreateBound(t, container, time.Time{})
	if err != nil {
		return "", err
	}
	s.debug.Debug("gate token %s created for %s/%s, bound to container %s", tokenid.Show(tok), t.Project, t.Task, container)
	return GateToken(tok), nil
}

// RevokeToken removes every gate token of t and returns how many there
// were; the gate refuses them from the next request. Revoking a task
// without tokens is no error.
func (s *Sandbox) RevokeToken(t TaskRef) (int, error) {
	if err := checkProjectTask("revoke gate tokens", t.Project, t.Task); err != nil {
		return 0, err
	}
	n, err := gatetokens.NewStore(s.cfg, s.log).Revoke(t)
	if err != nil {
		return 0, err
	}
	s.debug.Debug("%d gate token(s) of %s/%s revoked", n, t.Project, t.Task)
	return n, nil
}

// GateURL is the clone URL of a gate repository for a container
// (docs/runner.md, Runtime helpers): the token is the Basic-auth user name.
func (s *Sandbox) GateURL(repoPath string, token GateToken) (string, error) {
	return GateURL(s.cfg, repoPath, token)
}

// Run launches spec with a facade for cfg (default options).
func Run(ctx context.Context, cfg config.Config, spec RunSpec, hooks LifecycleHooks) (string, error) {
	return New(cfg, Options{}).Run(ctx, spec, hooks)
}

// CreateToken creates a gate token for t in cfg's store.
func CreateToken(cfg config.Config, t TaskRef) (GateToken, error) {
	return New(cfg, Options{}).CreateToken(t)
}

// RevokeToken is Sandbox.RevokeToken for cfg.
func RevokeToken(cfg config.Config, t TaskRef) (int, error) {
	return New(cfg, Options{}).RevokeToken(t)
}

// checkProjectTask applies the project and task id rules (docs/runner.md,
// Names) before a token operation opens its store.
func checkProjectTask(what, project, task string) error {
	if err := names.ValidateProjectID(project); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := names.ValidateTaskID(task); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// DefaultTaskDir is a container's task directory when the run
// specification names none: <state_dir>/tasks/<name>. The name is checked
// first (docs/runner.md, Names), so the result is always a direct child of
// <state_dir>/tasks.
func DefaultTaskDir(cfg config.Config, name string) (string, error) {
	if err := names.ValidateContainerName(name); err != nil {
		return "", err
	}
	return filepath.Join(cfg.StateDir, "tasks", name), nil
}

// GateURL builds `http://<token>@host.containers.internal:<gate port>/<repo
// path relative to the gate base path>`. repoPath must lie strictly inside
// cfg.GateBasePath(); the token must be URL-safe (gate tokens are).
func GateURL(cfg config.Config, repoPath string, gateToken GateToken) (string, error) {
	token := string(gateToken)
	if token == "" || strings.ContainsFunc(token, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' || r == '~')
	}) {
		return "", fmt.Errorf("gate URL: token %s is not a valid gate token", tokenid.Show(token))
	}
	base, err := filepath.Abs(cfg.GateBasePath())
	if err != nil {
		return "", fmt.Errorf("gate URL: base path: %w", err)
	}
	repo, err := filepath.Abs(repoPath)
	if err != nil {
		return "", fmt.Errorf("gate URL: repo path: %w", err)
	}
	rel, err := filepath.Rel(base, repo)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("gate URL: repository %s is not inside the gate base path %s", repoPath, base)
	}
	u := url.URL{
		Scheme: "http",
		User:   url.User(token),
		Host:   net.JoinHostPort("host.containers.internal", fmt.Sprint(cfg.GatePort)),
		Path:   "/" + filepath.ToSlash(rel),
	}
	return u.String(), nil
}

// StreamLogs is Sandbox.StreamLogs with default options.
func StreamLogs(ctx context.Context, container string, timeout time.Duration, readyCheck func(string) bool) bool {
	return New(config.Config{}, Options{}).StreamLogs(ctx, container, timeout, readyCheck)
}

// WaitForExit is Sandbox.WaitForExit with default options.
func WaitForExit(ctx context.Context, container string, timeout time.Duration) int {
	return New(config.Config{}, Options{}).WaitForExit(ctx, container, timeout)
}

// Stop is Sandbox.Stop with default options.
func Stop(ctx context.Context, containers []string) {
	New(config.Config{}, Options{}).Stop(ctx, containers)
}

// ContainerState is Sandbox.ContainerState with default options.
func ContainerState(ctx context.Context, name string) (string, bool) {
	return New(config.Config{}, Options{}).ContainerState(ctx, name)
}

// IsContainerRunning is Sandbox.IsContainerRunning with default options.
func IsContainerRunning(ctx context.Context, name string) bool {
	return New(config.Config{}, Options{}).IsContainerRunning(ctx, name)
}

// ProjectContainerStates is Sandbox.ProjectContainerStates with default
// options.
func ProjectContainerStates(ctx context.Context, prefix string) map[string]string {
	return New(config.Config{}, Options{}).ProjectContainerStates(ctx, prefix)
}

// ReserveFreePort binds 127.0.0.1 (or host) port 0 and keeps it open; close
// the listener right before binding the real service.
func ReserveFreePort(host string) (net.Listener, int, error) { return podman.ReservePort(host) }

// FindFreePort returns a currently free port (a small race remains).
func FindFreePort(host string) (int, error) { return podman.FindFreePort(host) }
