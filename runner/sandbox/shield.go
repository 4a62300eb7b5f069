package sandbox

// This file wires the egress firewall into the Sandbox (docs/shield.md, How a launch is protected;
// docs/runner.md, Go API (`terok.dev/sandbox/runner/sandbox`)).

import (
	"context"

	"terok.dev/sandbox/runner/internal/daemonctl"
	"terok.dev/sandbox/runner/internal/firewall"
	"terok.dev/sandbox/runner/internal/shield"
)

// shieldAdapter builds the shield adapter for this facade's configuration.
// The hook executable is looked up next to terok-sandbox, then on PATH; if
// it is missing, pre-start fails (closed) naming it.
func (s *Sandbox) shieldAdapter() *shield.Adapter {
	hook, _ := daemonctl.FindBinary("terok-shield-hook")
	a := shield.NewAdapter(s.cfg, s.env, hook, s.log)
	a.Opts.Podman = s.podman.Bin
	return a
}

// The adapter checks every started container (firewall.Verifier) and
// stops what a failed start left behind (firewall.Cleaner).
var (
	_ firewall.EarlyVerifier = (*shield.Adapter)(nil)
	_ firewall.Cleaner       = (*shield.Adapter)(nil)
)

// firewall returns the firewall Run asks for its podman arguments when
// shield bypass is not set: the shield. Every failure of its pre-start
// (missing profile, missing global hooks, unwritable state directory, …)
// aborts the launch.
func (s *Sandbox) firewall() firewall.Firewall { return s.shieldAdapter() }

// PreStartArgs returns the shield's podman arguments for a container about
// to be created in taskDir (docs/runner.md, Go API (`terok.dev/sandbox/runner/sandbox`)). Under bypass it
// warns and returns none.
func (s *Sandbox) PreStartArgs(ctx context.Context, container, taskDir string) ([]string, error) {
	return s.shieldAdapter().PreStart(ctx, firewall.Launch{Container: container, TaskDir: taskDir})
}

// ShieldDown switches a running container's firewall to bypass mode
// (logged; private ranges stay rejected unless allowAll). No-op under
// shield bypass.
func (s *Sandbox) ShieldDown(ctx context.Context, container, taskDir string, allowAll bool) error {
	return s.shieldAdapter().Down(ctx, container, taskDir, allowAll)
}

// ShieldUp re-applies a running container's enforcing ruleset. No-op under
// shield bypass.
func (s *Sandbox) ShieldUp(ctx context.Context, container, taskDir string) error {
	return s.shieldAdapter().Up(ctx, container, taskDir)
}

// ShieldState classifies a container's live ruleset: up, down, down_all,
// inactive or error. It always asks the kernel, even under bypass.
func (s *Sandbox) ShieldState(ctx context.Context, container, taskDir string) string {
	return s.shieldAdapter().State(ctx, container, taskDir)
}

// ShieldAllow allows an IP, CIDR or domain for a running container, at once
// and persisted. For an address or CIDR it returns it; for a domain it
// returns nil: the container's resolver is told to forward the domain, and
// its addresses are allowed as the container looks them up.
func (s *Sandbox) ShieldAllow(ctx context.Context, container, taskDir, target string) ([]string, error) {
	return s.shieldAdapter().ShieldFor(taskDir).Allow(ctx, container, target)
}

// ShieldDeny denies an IP, CIDR or domain for a running container, at once
// and persisted. For an address or CIDR it returns it; for a domain it
// returns nil: the container's resolver refuses the domain from then on and
// drops the addresses it learned for it. Only a domain on the allowlist can
// be denied (a subdomain of a listed one is an error naming that one).
func (s *Sandbox) ShieldDeny(ctx context.Context, container, taskDir, target string) ([]string, error) {
	return s.shieldAdapter().ShieldFor(taskDir).Deny(ctx, container, target)
}

// ShieldStatus is the shield configuration summary (docs/shield.md, Status and check).
func (s *Sandbox) ShieldStatus() shield.Status { return s.shieldAdapter().Status() }

// ShieldCheck is the shield environment check (docs/shield.md, Status and check); it also
// stops resolvers that failed starts leaked (EnvCheck.Cleaned says which).
func (s *Sandbox) ShieldCheck(ctx context.Context) shield.EnvCheck {
	return s.shieldAdapter().Check(ctx)
}

// ShieldCleanup stops the per-container resolver a task left behind when
// its container no longer runs (after a failed start, or a container
// removed outside terok-sandbox); the launcher and Stop call it themselves.
func (s *Sandbox) ShieldCleanup(ctx context.Context, container, taskDir string) error {
	return s.shieldAdapter().Cleanup(ctx, container, taskDir)
}
