// Package launch assembles, prints and executes the hardened `podman run -d`
// (docs/runner.md, Argument order). It knows nothing about where the firewall arguments
// come from; the caller passes them in.
package launch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"terok.dev/sandbox/runner/internal/podman"
)

// EnvVar is one container environment variable.
type EnvVar struct{ Name, Value string }

// Params is everything the argument list is built from.
type Params struct {
	// Rootless is true when podman runs as a non-root user (docs/runner.md, Argument order).
	Rootless bool
	// Unrestricted drops --security-opt no-new-privileges (docs/runner.md, Argument order).
	Unrestricted bool
	// SeccompProfile is the sandbox's seccomp profile (docs/seccomp.md),
	// passed as --security-opt seccomp=<path> on every launch, shielded or
	// not: the socket families it refuses (AF_VSOCK first) are channels no
	// firewall sees. The caller checks the file (seccomp.Load).
	SeccompProfile string
	// FirewallArgs come from the shield pre-start or bypass (docs/runner.md, Argument order).
	FirewallArgs []string
	GPU          bool
	ExtraArgs    []string
	Volumes      []string
	// ShieldStateDir is the task's shield state dir (<task dir>/shield):
	// Validate refuses a volume, in Volumes or the extra arguments, whose
	// host source contains it or lies inside it (volumes.go). "" skips
	// that check.
	ShieldStateDir string
	Env            []EnvVar
	// Labels mark the container as the runner's (docs/runner.md, Labels);
	// they follow the extra arguments so those cannot replace them.
	Labels  []Label
	Name    string
	Image   string
	Command []string
}

// Label is one container label.
type Label struct{ Key, Value string }

// The labels of the runner's containers (docs/runner.md, Labels).
const (
	// LabelRunnerVersion is on every container the runner launches: `ps`
	// lists the runner's containers by its presence.
	LabelRunnerVersion = "dev.terok.sandbox.runner-version"
	// LabelProject and LabelTask carry the run specification's project
	// and task ids when it names them.
	LabelProject = "dev.terok.sandbox.project"
	LabelTask    = "dev.terok.sandbox.task"
)

// RunnerLabels are the labels of a launch: the runner version always, the
// project and task when not empty.
func RunnerLabels(runnerVersion, project, task string) []Label {
	l := []Label{{LabelRunnerVersion, runnerVersion}}
	if project != "" {
		l = append(l, Label{LabelProject, project})
	}
	if task != "" {
		l = append(l, Label{LabelTask, task})
	}
	return l
}

// Workdir is the container's working directory.
const Workdir = "/workspace"

// Validate rejects specs podman would misread: a value starting with "-"
// where podman expects a name or an image would be taken as a flag, and NUL
// bytes cannot pass through argv.
func (p Params) Validate() error {
	if p.Name == "" {
		return errors.New("container name is required")
	}
	if p.Image == "" {
		return errors.New("image is required")
	}
	if strings.HasPrefix(p.Name, "-") {
		return fmt.Errorf("container name %q must not start with '-'", p.Name)
	}
	if strings.HasPrefix(p.Image, "-") {
		return fmt.Errorf("image %q must not start with '-'", p.Image)
	}
	for _, e := range p.Env {
		if err := ValidEnvName(e.Name); err != nil {
			return err
		}
	}
	if err := checkExtraArgs(p.ExtraArgs, p.ShieldStateDir); err != nil {
		return err
	}
	for _, v := range p.Volumes {
		if v == "" || strings.HasPrefix(v, "-") {
			return fmt.Errorf("volume %q is not a host:container[:options] spec", v)
		}
		if src := volumeSource(v); src != "" {
			if err := checkVolumeSource(src, p.ShieldStateDir); err != nil {
				return fmt.Errorf("volume %q: %w", v, err)
			}
		}
	}
	all := append(append(append([]string{p.Name, p.Image}, p.Volumes...), p.ExtraArgs...), p.Command...)
	for _, e := range p.Env {
		all = append(all, e.Value)
	}
	for _, s := range all {
		if strings.ContainsRune(s, 0) {
			return fmt.Errorf("argument %q contains a NUL byte", s)
		}
	}
	return nil
}

// ValidEnvName accepts names podman can pass: non-empty, no '=', no NUL.
func ValidEnvName(name string) error {
	if name == "" {
		return errors.New("environment variable name is empty")
	}
	if strings.ContainsAny(name, "=\x00") {
		return fmt.Errorf("environment variable name %q contains '=' or NUL", name)
	}
	return nil
}

// GPUArgs are the CDI arguments (docs/runner.md, Argument order).
func GPUArgs() []string {
	return []string{"--device", "nvidia.com/gpu=all", "-e", "NVIDIA_VISIBLE_DEVICES=all", "-e", "NVIDIA_DRIVER_CAPABILITIES=all"}
}

// UsernsArgs map the host user to the container's uid/gid 1000 (the dev
// user of the task images) under rootless podman (docs/runner.md, Argument order).
func UsernsArgs() []string { return []string{"--userns=keep-id:uid=1000,gid=1000"} }

// Args is the podman argument list (without the program name) in the exact
// order of docs/runner.md, Argument order: one flag or value per element.
func Args(p Params) []string {
	args := []string{"run", "-d"}
	if p.Rootless {
		args = append(args, UsernsArgs()...)
	}
	if !p.Unrestricted {
		args = append(args, "--security-opt", "no-new-privileges")
	}
	if p.SeccompProfile != "" {
		args = append(args, "--security-opt", "seccomp="+p.SeccompProfile)
	}
	args = append(args, p.FirewallArgs...)
	if p.GPU {
		args = append(args, GPUArgs()...)
	}
	args = append(args, p.ExtraArgs...)
	for _, v := range p.Volumes {
		args = append(args, "-v", v)
	}
	for _, e := range p.Env {
		args = append(args, "-e", e.Name+"="+e.Value)
	}
	for _, l := range p.Labels {
		args = append(args, "--label", l.Key+"="+l.Value)
	}
	args = append(args, "--name", p.Name, "-w", Workdir, p.Image)
	return append(args, p.Command...)
}

// GPUHint is the remediation shown with a GPU configuration error.
const GPUHint = "Hint: NVIDIA CDI configuration appears to be missing or broken.\n" +
	"Ensure the NVIDIA Container Toolkit is installed and CDI is configured.\n" +
	"See: https://podman-desktop.io/docs/podman/gpu"

// GPUError is a launch failure caused by a missing or broken NVIDIA CDI
// configuration.
type GPUError struct {
	// Stderr is podman's trimmed error output.
	Stderr string
	// Hint is GPUHint.
	Hint string
	// Cleanup, when not empty, says what the launcher cleaned up.
	Cleanup string
}

func (e *GPUError) Error() string {
	msg := "Container launch failed (GPU misconfiguration):\n" + e.Stderr
	if e.Cleanup != "" {
		msg += "\n\n" + e.Cleanup
	}
	return msg + "\n\n" + e.Hint
}

// LaunchError is any other failed launch; Detail is podman's trimmed stderr
// (or a description of the failed command).
type LaunchError struct {
	// Step, when known, is the step that failed (docs/runner.md, Failed
	// starts).
	Step   Step
	Detail string
	// Cleanup, when not empty, says what the launcher cleaned up (the
	// container removed, or the command to remove it).
	Cleanup string
	// Hint, when not empty, follows the detail (name clash, missing image).
	Hint string
}

func (e *LaunchError) Error() string {
	msg := "Container launch failed:\n"
	if e.Step != "" {
		msg = "Container launch failed: " + string(e.Step) + " failed.\n"
	}
	msg += e.Detail
	for _, s := range []string{e.Cleanup, e.Hint} {
		if s != "" {
			msg += "\n\n" + s
		}
	}
	return msg
}

// IsGPUError reports whether stderr names a CDI/GPU failure (docs/runner.md, Execution and errors:
// case-sensitive substrings).
func IsGPUError(stderr string) bool {
	for _, m := range [...]string{"cdi.k8s.io", "nvidia.com/gpu", "CDI"} {
		if strings.Contains(stderr, m) {
			return true
		}
	}
	return false
}

// Classify turns a failed podman run into its error (docs/runner.md,
// Execution and errors).
func Classify(res podman.Result, err error, name, image string) error {
	if errors.Is(err, podman.ErrNotFound) {
		return podman.ErrNotFound
	}
	stderr := strings.TrimSpace(string(res.Stderr))
	if IsGPUError(stderr) {
		return &GPUError{Stderr: stderr, Hint: GPUHint}
	}
	le := &LaunchError{Detail: podman.ErrorText(res, err, "podman run")}
	switch {
	case strings.Contains(stderr, "already in use"):
		le.Hint = fmt.Sprintf("Hint: a container named %q already exists; remove it with `terok-sandbox stop %s` or choose another name.", name, name)
	case strings.Contains(stderr, "image not known") || strings.Contains(stderr, "initializing source") ||
		strings.Contains(stderr, "manifest unknown") || strings.Contains(stderr, "short-name"):
		le.Hint = fmt.Sprintf("Hint: image %q is not in podman's local storage and could not be pulled; build or load it first (podman images lists what is there).", image)
	}
	return le
}

// Execute runs podman with args and returns the new container's id.
func Execute(ctx context.Context, p podman.Podman, args []string, name, image string) (string, error) {
	return ExecuteShowing(ctx, p, nil, args, name, image)
}

// ExecuteShowing is Execute that copies podman's stderr (an image pull's
// progress) to show when show is not nil.
func ExecuteShowing(ctx context.Context, p podman.Podman, show io.Writer, args []string, name, image string) (string, error) {
	res, err := p.ExecShowing(ctx, show, args...)
	if err != nil {
		if ctx.Err() != nil && !errors.Is(err, podman.ErrNotFound) {
			return "", fmt.Errorf("podman run %s: %w", name, ctx.Err())
		}
		return "", Classify(res, err, name, image)
	}
	return strings.TrimSpace(string(res.Stdout)), nil
}
