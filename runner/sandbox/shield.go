package sandbox

// This file wires the egress firewall into the Sandbox (docs/shield.md, How a launch is protected;
// docs/runner.md, Go API (`terok.dev/sandbox/runner/sandbox`)).

import (
	"context"

	"terok.dev/sandbox/runner/internal/daemonctl"
	"terok.dev/sandbox/runner/internal/firewall"
	ishield "terok.dev/sandbox/runner/internal/shield"
	"terok.dev/sandbox/runner/shield"
)

// shieldAdapter builds the shield adapter Run uses for this facade's
// configuration. The hook executable is looked up next to terok-sandbox,
// then on PATH; if it is missing, pre-start fails (closed) naming it.
func (s *Sandbox) shieldAdapter() *ishield.Adapter {
	hook, _ := daemonctl.FindBinary("terok-shield-hook")
	a := ishield.NewAdapter(s.cfg, s.env, hook, s.log)
	a.Opts.Podman = s.podman.Bin
	return a
}

// The adapter checks every started container (firewall.Verifier) and
// stops what a failed start left behind (firewall.Cleaner).
var (
	_ firewall.EarlyVerifier = (*ishield.Adapter)(nil)
	_ firewall.Cleaner       = (*ishield.Adapter)(nil)
)

// firewall returns the firewall Run asks for its podman arguments when
// shield bypass is not set: the shield. Every failure of its pre-start
// (missing profile, missing global hooks, unwritable state directory, …)
// aborts the launch.
func (s *Sandbox) firewall() firewall.Firewall { return s.shieldAdapter() }

// Shield returns the egress firewall of this facade's configuration, with
// its podman and logger: the runner/shield API (setup, status, check,
// pre-start arguments, live operations). The Shield* methods below are
// shorthands for it.
func (s *Sandbox) Shield() *shield.Shield {
	return shield.New(s.cfg, shield.Options{Env: s.env, Log: s.log, Podman: s.podman.Bin})
}

// PreStartArgs returns the shield's podman arguments for a container about
// to be created (docs/runner.md, Go API (`terok.dev/sandbox/runner/sandbox`)):
// shield.Shield.PreStartArgs. Under bypass it warns and returns none.
func (s *Sandbox) PreStartArgs(ctx context.Context, l shield.Launch) ([]string, error) {
	return s.Shield().PreStartArgs(ctx, l)
}

// ShieldDown switches a running container's firewall to bypass mode
// (logged; private ranges stay rejected unless d.AllowAll). No-op under
// shield bypass.
func (s *Sandbox) ShieldDown(ctx context.Context, c shield.Container, d shield.Down) error {
	return s.Shield().Down(ctx, c, d)
}

// ShieldUp re-applies a running container's enforcing ruleset. No-op under
// shield bypass.
func (s *Sandbox) ShieldUp(ctx context.Context, c shield.Container) error {
	return s.Shield().Up(ctx, c)
}

// ShieldState classifies a container's live ruleset (shield.StateUp, …).
// It always asks the kernel, even under bypass.
func (s *Sandbox) ShieldState(ctx context.Context, c shield.Container) (shield.State, error) {
	return s.Shield().State(ctx, c)
}

// ShieldAllow allows an IP, CIDR or domain for a running container, at once
// and persisted. For an address or CIDR it returns it; for a domain it
// returns nil: the container's resolver is told to forward the domain, and
// its addresses are allowed as the container looks them up.
func (s *Sandbox) ShieldAllow(ctx context.Context, c shield.Container, target string) ([]string, error) {
	return s.Shield().Allow(ctx, c, target)
}

// ShieldDeny denies an IP, CIDR or domain for a running container, at once
// and persisted. For an address or CIDR it returns it; for a domain it
// returns nil: the container's resolver refuses the domain from then on and
// drops the addresses it learned for it. Only a domain on the allowlist can
// be denied (a subdomain of a listed one is an error naming that one).
func (s *Sandbox) ShieldDeny(ctx context.Context, c shield.Container, target string) ([]string, error) {
	return s.Shield().Deny(ctx, c, target)
}

// ShieldStatus is the shield configuration summary (docs/shield.md, Status and check).
func (s *Sandbox) ShieldStatus() shield.Status { return s.Shield().Status() }

// ShieldCheck is the shield environment check (docs/shield.md, Status and check); it also
// stops resolvers that failed starts leaked (EnvCheck.Cleaned says which).
func (s *Sandbox) ShieldCheck(ctx context.Context) shield.EnvCheck {
	return s.Shield().Check(ctx)
}

// ShieldCleanup stops the per-container resolver a task left behind when
// its container no longer runs (after a failed start, or a container
// removed outside terok-sandbox); the launcher and Stop call it themselves.
func (s *Sandbox) ShieldCleanup(ctx context.Context, c shield.Container) error {
	return s.Shield().Cleanup(ctx, c)
}
