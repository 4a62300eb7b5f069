// Package firewall is the seam between the launcher and the egress
// firewall (docs/runner.md, Argument order): before podman runs, the launcher asks a
// Firewall for the podman arguments that put the container behind it. A
// Firewall that cannot protect the container returns an error and the launch
// is aborted; the only way to run without a firewall is the explicit Bypass.
package firewall

import (
	"context"
	"errors"
	"fmt"
	"io"

	"terok.dev/sandbox/runner/internal/podmaninfo"
)

// Firewall returns the podman arguments that apply the egress firewall to
// the container about to be created. An error aborts the launch.
type Firewall interface {
	PreStart(ctx context.Context, l Launch) ([]string, error)
}

// Launch is what a firewall knows of the container about to be created.
type Launch struct {
	Container, TaskDir string
	// Mode is the shield mode (common/shieldbundle Mode*; "" is enforce).
	Mode string
	// Project and Task are the launch's ids ("" when unset), which the
	// shield writes into its audit records.
	Project, Task string
}

// ErrUnavailable is wrapped by FailClosed's error.
var ErrUnavailable = errors.New("egress firewall unavailable")

// FailClosed refuses every launch. It stands in wherever no working shield
// is wired, so a missing firewall can never mean unfiltered egress.
type FailClosed struct {
	// Reason says why the firewall is unavailable; ConfigFile names where
	// the bypass setting would go (for the hint).
	Reason     string
	ConfigFile string
}

// PreStart always fails, naming the cause and the explicit way out.
func (f FailClosed) PreStart(context.Context, Launch) ([]string, error) {
	reason := f.Reason
	if reason == "" {
		reason = "no shield firewall is configured"
	}
	where := "the config file"
	if f.ConfigFile != "" {
		where = f.ConfigFile
	}
	return nil, fmt.Errorf("%w: %s; refusing to start a container with unfiltered egress. "+
		"To run WITHOUT any egress firewall (dangerous), set shield_bypass = true in %s or pass --shield-bypass", ErrUnavailable, reason, where)
}

// Warning is the exact bypass banner, printed between two blank lines
// (docs/runner.md, Argument order).
const Warning = "!! SHIELD BYPASSED — egress firewall DISABLED (shield_bypass is set) !!"

// Bypass is the explicit no-firewall mode: it prints the loud warning and
// returns only the network wiring that lets host.containers.internal reach
// the host's loopback services (docs/shield.md, Rootful and rootless network wiring (and why)).
type Bypass struct {
	// Out receives the warning (the launcher's stdout).
	Out io.Writer
	// Root is true when podman runs as effective uid 0.
	Root bool
	// Info queries podman for the rootless network mode (docs/shield.md, Rootful and rootless network wiring (and why)); nil
	// means podmaninfo.Query with "podman".
	Info func(ctx context.Context) podmaninfo.Info
}

// PreStart prints the warning and returns the bypass network arguments.
func (b Bypass) PreStart(ctx context.Context, _ Launch) ([]string, error) {
	if b.Out != nil {
		fmt.Fprintf(b.Out, "\n%s\n\n", Warning)
	}
	return BypassArgs(ctx, b.Root, b.Info), nil
}

// BypassArgs are the network arguments of bypass mode. Root uses the same
// slirp4netns host-loopback wiring as rootless (the project's decision for
// root caveat of docs/shield.md, Rootful and rootless network wiring (and why):
// host.containers.internal = 10.0.2.2 →
// host 127.0.0.1 for both); rootless follows podman's network mode with the
// single detection rule of podmaninfo.
func BypassArgs(ctx context.Context, root bool, info func(context.Context) podmaninfo.Info) []string {
	if root {
		return podmaninfo.HostLoopbackArgs(podmaninfo.Slirp4netns)
	}
	if info == nil {
		info = func(ctx context.Context) podmaninfo.Info { return podmaninfo.Query(ctx, "podman") }
	}
	return podmaninfo.HostLoopbackArgs(info(ctx).NetworkMode())
}

// Verifier is implemented by a Firewall that can check, once podman has
// created and started the container, that its rules are really in place
// (e.g. a misinstalled OCI hook that podman silently skipped). An error makes
// the launcher remove the container and fail. Bypass does not implement it.
type Verifier interface {
	VerifyStarted(ctx context.Context, container, taskDir, containerID string) error
}

// EarlyVerifier is a Verifier that can begin its check while podman is still
// creating and starting the container, so that the check costs less time
// after podman returns. The launcher calls BeginVerify right before podman
// runs and then exactly one of the Verification's Finish (podman succeeded)
// or Stop (it failed); Finish must be as strict as VerifyStarted.
type EarlyVerifier interface {
	Verifier
	BeginVerify(ctx context.Context, container, taskDir string) Verification
}

// Verification is a post-start check under way.
type Verification interface {
	// Finish completes the check for the container podman reported; an
	// error means the container must be removed, as for VerifyStarted.
	Finish(ctx context.Context, containerID string) error
	// Stop abandons the check and releases what it holds; safe to call
	// more than once and after Finish.
	Stop()
}

// Cleaner is implemented by firewalls that leave per-container processes or
// state (the shield's per-container resolver). The launcher calls Cleanup
// after it removed a container whose start failed, and `stop` after its
// `podman rm -f`, so nothing of a container outlives it even when its
// poststop hook never ran (docs/runner.md, Failed starts). Cleanup must be
// safe to call for a container that never had such state, more than once,
// and under shield bypass (containers started before bypass was set).
type Cleaner interface {
	Cleanup(ctx context.Context, container, taskDir string) error
}
