package shield

import (
	"context"
	"errors"
	"fmt"

	"terok.dev/sandbox/runner/internal/firewall"
	ishield "terok.dev/sandbox/runner/internal/shield"
)

// Launch describes a container about to be created, for PreStartArgs.
type Launch struct {
	// Container is the name podman will give it; TaskDir holds its shield
	// state (required).
	Container, TaskDir string
	// Mode is the shield mode ("" is enforce; docs/shield.md).
	Mode string
	// Project and Task go into the shield's audit records ("" when unset).
	Project, Task string
}

// PreStartArgs returns the podman arguments that put the container behind
// the firewall (hook annotations, DNS, capability drops). Any failure
// aborts the launch: a SetupNeededError when the global hooks are missing.
// Under shield_bypass it logs the bypass warning and returns none.
func (s *Shield) PreStartArgs(ctx context.Context, l Launch) ([]string, error) {
	return s.a.PreStart(ctx, firewall.Launch{Container: l.Container, TaskDir: l.TaskDir, Mode: l.Mode, Project: l.Project, Task: l.Task})
}

// Up re-applies a running container's enforcing ruleset. No-op under
// shield_bypass.
func (s *Shield) Up(ctx context.Context, c Container) error {
	if s.cfg.ShieldBypass {
		return nil
	}
	sh, err := s.live(ctx, c)
	if err != nil {
		return err
	}
	return sh.Up(ctx, c.Name)
}

// Down says how far Down opens the firewall.
type Down struct {
	// AllowAll opens private ranges too; without it they stay rejected.
	AllowAll bool
}

// Down switches a running container's firewall to bypass mode (logged and
// audited). No-op under shield_bypass.
func (s *Shield) Down(ctx context.Context, c Container, d Down) error {
	if s.cfg.ShieldBypass {
		return nil
	}
	sh, err := s.live(ctx, c)
	if err != nil {
		return err
	}
	return sh.Down(ctx, c.Name, d.AllowAll)
}

// State is a container's live ruleset as the kernel has it.
type State string

// The live states (docs/shield-hook.md, Verification and states).
const (
	StateUp       State = State(ishield.StateUp)
	StateDown     State = State(ishield.StateDown)
	StateDownAll  State = State(ishield.StateDownAll)
	StateInactive State = State(ishield.StateInactive)
	StateError    State = State(ishield.StateError)
)

// State classifies a container's live ruleset. It always asks the kernel,
// even under shield_bypass (containers started before may be firewalled);
// a container whose shield cannot be found is StateError with the error.
func (s *Shield) State(ctx context.Context, c Container) (State, error) {
	sh, err := s.live(ctx, c)
	if err != nil {
		return StateError, err
	}
	return State(sh.State(ctx, c.Name)), nil
}

// Allow allows an IP address, CIDR or domain for a running container, at
// once and persisted for restarts. For an address or CIDR it returns it;
// for a domain it returns nil: the container's resolver forwards the
// domain and its addresses are allowed as the container looks them up.
func (s *Shield) Allow(ctx context.Context, c Container, target string) ([]string, error) {
	sh, err := s.live(ctx, c)
	if err != nil {
		return nil, err
	}
	return sh.Allow(ctx, c.Name, target)
}

// Deny denies an IP address, CIDR or domain for a running container, at
// once and persisted. Only a domain on the allowlist can be denied (a
// subdomain of a listed one is an error naming that one).
func (s *Shield) Deny(ctx context.Context, c Container, target string) ([]string, error) {
	sh, err := s.live(ctx, c)
	if err != nil {
		return nil, err
	}
	return sh.Deny(ctx, c.Name, target)
}

// Status is the configuration summary (docs/shield.md, Status and check).
type Status = ishield.Status

// Status reports the shield's mode, default profiles, audit setting and
// bypass.
func (s *Shield) Status() Status { return s.a.Status() }

// EnvCheck is the environment check's verdict (docs/shield.md, Status and
// check): OK, the issues found, and NeedsSetup with its hint.
type EnvCheck = ishield.EnvCheck

// Check inspects the host for what the shield needs (podman and its hooks,
// nft, nsenter, the hook binary); it also stops resolvers leaked by failed
// starts (EnvCheck.Cleaned says which).
func (s *Shield) Check(ctx context.Context) EnvCheck { return s.a.Check(ctx) }

// Scope is where Setup installs the global hooks.
type Scope int

// The setup scopes.
const (
	// ScopeUser installs into the user's hooks directory and points the
	// user containers.conf at it.
	ScopeUser Scope = iota + 1
	// ScopeRoot installs system-wide (through sudo when not root).
	ScopeRoot
)

// SetupResult says where Setup put the hooks and what it changed.
type SetupResult = ishield.SetupResult

// Setup installs the global OCI hooks the shield needs (docs/shield.md,
// Global hooks and `shield setup`) and the seccomp profile.
func (s *Shield) Setup(ctx context.Context, scope Scope) (SetupResult, error) {
	switch scope {
	case ScopeUser:
		return s.a.Setup(ctx, false, true)
	case ScopeRoot:
		return s.a.Setup(ctx, true, false)
	default:
		return SetupResult{}, fmt.Errorf("unknown setup scope %d: use shield.ScopeUser or shield.ScopeRoot", int(scope))
	}
}

// Cleanup stops the per-container resolver a task left behind when its
// container no longer runs (after a failed start, or a container removed
// outside terok-sandbox), and removes its PID files. It needs c.TaskDir (a
// removed container has no annotation left to find it by); without one
// there is nothing to clean. A running container's helpers are left alone.
func (s *Shield) Cleanup(ctx context.Context, c Container) error {
	if c.Name == "" {
		return errors.New("no container name given")
	}
	return s.a.Cleanup(ctx, c.Name, c.TaskDir)
}
