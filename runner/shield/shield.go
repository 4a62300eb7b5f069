// Package shield is the public face of the per-container egress firewall
// (docs/shield.md, How a launch is protected): the global hook setup, the
// configuration status and environment check, the pre-start arguments of a
// launch, and the live operations on a running container (up, down, allow,
// deny, state). Its failures a caller acts on are typed, for errors.As:
// SetupNeededError (run Setup), ContainerNotRunningError, NotShieldedError.
//
// runner/sandbox uses the same shield for Run; this package is for an
// orchestrator that manages the firewall of containers on its own.
package shield

import (
	"context"
	"errors"
	"log/slog"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/runner/internal/daemonctl"
	"terok.dev/sandbox/runner/internal/firewall"
	ishield "terok.dev/sandbox/runner/internal/shield"
)

// Options are what the shield needs beyond the configuration.
type Options struct {
	// Env gives the home directory, XDG_CONFIG_HOME, CONTAINERS_CONF and the
	// effective uid; the zero value means config.FromOS().
	Env config.Env
	// Log receives structured warnings and the bypass warning; nil discards.
	Log *slog.Logger
	// HookBinary is the terok-shield-hook executable; "" looks next to the
	// running program, in the installation's libexec/terok, then on PATH.
	// When none is found, every pre-start fails (closed) naming it.
	HookBinary string
	// Podman is the podman executable; "" means "podman".
	Podman string
}

// Shield is the firewall of one configuration. It holds no state of its
// own; it is safe for concurrent use.
type Shield struct {
	cfg config.Config
	a   *ishield.Adapter
}

// New returns the shield of cfg.
func New(cfg config.Config, opts Options) *Shield {
	env := opts.Env
	if env.Getenv == nil && env.Home == "" {
		env = config.FromOS()
	}
	hook := opts.HookBinary
	if hook == "" {
		hook, _ = daemonctl.FindBinary("terok-shield-hook")
	}
	cfg = cfg.Clone()
	a := ishield.NewAdapter(cfg, env, hook, opts.Log)
	a.Opts.Podman = opts.Podman
	return &Shield{cfg: cfg, a: a}
}

// Container names one container for a live operation. TaskDir is the
// task directory it was launched with (its shield state is
// TaskDir/shield); "" finds the state through the container's
// terok.shield.state_dir annotation, which fails with a NotShieldedError
// for a container started without the shield.
type Container struct {
	Name    string
	TaskDir string
}

// The typed errors a caller detects with errors.As.
type (
	// SetupNeededError: podman needs the global hooks and they are not
	// installed; PreStartArgs (and so a launch) fails with it until Setup
	// has run (docs/shield.md, Global hooks and `shield setup`).
	SetupNeededError = ishield.SetupNeededError
	// ContainerNotRunningError: a live operation was asked for a container
	// without a process (exited, created and never started, or removed).
	ContainerNotRunningError = ishield.ContainerNotRunningError
	// NotShieldedError: the container has no shield state annotation
	// (started under bypass, or outside terok-sandbox).
	NotShieldedError = ishield.NotShieldedError
)

// ErrUnavailable is wrapped by the error of a launch that no firewall can
// protect; the only way past it is shield_bypass in the configuration.
var ErrUnavailable = firewall.ErrUnavailable

// live is the internal shield of c: from its task directory, or found
// through its annotation.
func (s *Shield) live(ctx context.Context, c Container) (*ishield.Shield, error) {
	if c.Name == "" {
		return nil, errors.New("no container name given")
	}
	if c.TaskDir != "" {
		return s.a.ShieldFor(c.TaskDir), nil
	}
	return s.a.ForContainer(ctx, c.Name)
}
