package launch

// This file is the failed-start side of the launch (docs/runner.md, Failed
// starts): which step failed, whether a container podman left behind is
// the one this launch created, and the sentence that tells the operator
// what was cleaned up.

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"terok.dev/sandbox/runner/internal/podman"
)

// Step names the part of a launch that failed, as the error says it.
type Step string

// The steps of a launch after the command line is built. Shield pre-start
// and verification have their own errors (in runner/sandbox); these are the
// steps inside `podman run -d`.
const (
	// StepCreate: podman could not create the container (bad image, name
	// in use, invalid option). Usually nothing was created.
	StepCreate Step = "container creation"
	// StepHook: an OCI hook (the shield's createRuntime hook) refused the
	// container; the hook's reason is in <task>/shield/hook-error.log.
	StepHook Step = "the shield hook"
	// StepCommand: the container was created but its command could not be
	// started (runc: executable file not found, permission denied, …).
	StepCommand Step = "starting the container's command"
)

// FailedStep tells from podman's error output and whether the container
// exists afterwards which step failed. A hook's failure is recognised by
// runc's and the hook's own wording, a start failure by the OCI runtime's;
// otherwise a container that exists was created, so its start failed.
func FailedStep(stderr string, created bool) Step {
	low := strings.ToLower(stderr)
	switch {
	case strings.Contains(low, "error running hook"), strings.Contains(low, "terok-shield hook"),
		strings.Contains(low, "createruntime"):
		return StepHook
	case created, strings.Contains(low, "oci runtime"), strings.Contains(low, "runc create failed"),
		strings.Contains(low, "crun:"), strings.Contains(low, "executable file not found"):
		return StepCommand
	}
	return StepCreate
}

// IsNameClash reports whether podman refused the run because the name is
// taken: that container is somebody else's and is never touched.
func IsNameClash(err error) bool {
	le, ok := err.(*LaunchError)
	return ok && strings.Contains(le.Detail, "already in use")
}

// ownSlack tolerates coarse or slightly skewed creation timestamps; it
// does not weaken the check, which rests on the exact create command.
const ownSlack = 2 * time.Second

// CreatedBy reports whether c is the container a `podman <args>` that
// began at started created. Podman records the argv of the run that
// created a container (.Config.CreateCommand); it must equal ours exactly
// (the name, image, firewall annotations and command included) and the
// creation must not predate our run. A container of the same name that
// somebody else created — or one created by different arguments — is not
// ours. When podman recorded no create command (a remote podman), the
// shield's state-dir annotation must equal stateDir instead; without
// either proof (a bypass launch through a remote podman) it is not ours.
func CreatedBy(c podman.Container, args []string, stateDir string, started time.Time) bool {
	if c.Created.Before(started.Add(-ownSlack)) {
		return false
	}
	if len(c.CreateCommand) > 0 {
		return slices.Equal(c.CreateCommand[1:], args)
	}
	return stateDir != "" && c.Annotations[AnnStateDir] == stateDir
}

// AnnStateDir is the shield's state-directory annotation
// (docs/shield-hook.md, Invocation); repeated here so launch stays free of the
// shield's packages.
const AnnStateDir = "terok.shield.state_dir"

// Cleanup outcome sentences, appended to a failed launch's error.

// RemovedNote: the container this launch created was removed.
func RemovedNote(name string) string {
	return fmt.Sprintf("The container %s was removed; the name is free for the next launch.", name)
}

// NotCreatedNote: podman left no container behind.
func NotCreatedNote(name string) string {
	return fmt.Sprintf("No container %s was left behind; the name is free.", name)
}

// RemoveFailedNote: removal failed; the operator gets the exact command.
func RemoveFailedNote(name, why string) string {
	return fmt.Sprintf("Removing the container %s FAILED (%s): remove it now with `podman %s`.",
		name, why, strings.Join(podman.ForceRemoveArgs(name), " "))
}

// UncheckedNote: podman could not tell whether a container was left.
func UncheckedNote(name, why string) string {
	return fmt.Sprintf("Could not check whether podman left a container %s behind (%s): check with `podman ps -a --filter name=^%s$` and remove it with `podman %s`.",
		name, why, name, strings.Join(podman.ForceRemoveArgs(name), " "))
}

// NotOursNote: a container of that name exists but this launch did not
// create it, so it was left alone.
func NotOursNote(name string) string {
	return fmt.Sprintf("A container named %s exists but was not created by this launch; it was left alone.", name)
}

// CleanupFailedNote: the firewall's per-container processes could not be
// stopped.
func CleanupFailedNote(name, why string) string {
	return fmt.Sprintf("Stopping the shield's processes of %s FAILED (%s): run `terok-sandbox stop %s`.", name, why, name)
}

// HookHint points at the shield hook's own log.
func HookHint(taskDir string) string {
	return fmt.Sprintf("Hint: the shield hook's reason is in %s/shield/hook-error.log; `terok-sandbox shield check` diagnoses the shield setup.", taskDir)
}

// CommandHint explains a command podman created but could not start.
func CommandHint(command []string, image string) string {
	if len(command) == 0 {
		return fmt.Sprintf("Hint: the default command of image %q could not be started; check the image's entrypoint.", image)
	}
	return fmt.Sprintf("Hint: %q could not be started in image %q; check that it exists there and is executable.", command[0], image)
}

// WithStep fills in the failed step, what the cleanup did and, when
// podman's own hint is missing, the step's hint. It changes only a
// *LaunchError or *GPUError and returns err itself.
func WithStep(err error, step Step, cleanup, hint string) error {
	switch e := err.(type) {
	case *LaunchError:
		e.Step, e.Cleanup = step, cleanup
		if e.Hint == "" {
			e.Hint = hint
		}
	case *GPUError:
		e.Cleanup = cleanup
	}
	return err
}

// AnnotationIn returns the value of the `--annotation KEY=VALUE` in args
// (separate elements, as the firewalls emit them), or "".
func AnnotationIn(args []string, key string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "--annotation" {
			if v, ok := strings.CutPrefix(args[i+1], key+"="); ok {
				return v
			}
		}
	}
	return ""
}
