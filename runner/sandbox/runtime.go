package sandbox

import (
	"context"

	"terok.dev/sandbox/runner/internal/firewall"
	"terok.dev/sandbox/runner/internal/launch"
)

// GPURunArgs are the podman arguments that give a container the host's
// NVIDIA GPUs through CDI (docs/runner.md); none when enabled is false.
// Run adds them itself for RunSpec.GPUEnabled.
func GPURunArgs(enabled bool) []string {
	if !enabled {
		return nil
	}
	return launch.GPUArgs()
}

// RedactEnvArgs returns a copy of a podman argument list with the values
// of sensitive environment variables (tokens, keys, passwords) replaced,
// in the forms -e NAME=value, --env NAME=value, -e=… and --env=…; it is
// what Run prints. Other arguments are unchanged.
func RedactEnvArgs(argv []string) []string { return launch.Redact(argv) }

// UsernsArgs are the podman arguments Run adds under rootless podman so
// that the host user is the container's uid/gid 1000, the dev user of the
// task images; none when podman runs as root.
func (s *Sandbox) UsernsArgs() []string {
	if !s.rootless() {
		return nil
	}
	return launch.UsernsArgs()
}

// BypassNetworkArgs are the only firewall arguments Run adds under shield
// bypass: the network wiring that lets host.containers.internal reach the
// host's loopback services, with no egress filtering at all
// (docs/shield.md, Rootful and rootless network wiring (and why)).
// Rootless, it follows podman's network mode (podman info, cached).
// Unlike Run it prints no warning: the caller decides to bypass.
func (s *Sandbox) BypassNetworkArgs(ctx context.Context) []string {
	return firewall.BypassArgs(ctx, !s.rootless(), s.podmanInfo)
}
