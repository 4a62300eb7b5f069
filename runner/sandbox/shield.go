package sandbox

// This file wires the egress firewall into the Sandbox. It is owned by the
// shield engineer from its first commit on: the fail-closed body below is
// replaced by the real shield adapter (shield.md §15).

import (
	"context"
	"path/filepath"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/runner/internal/firewall"
)

// firewall returns the firewall Run asks for its podman arguments when
// shield bypass is not set. Until the shield adapter is wired it refuses
// every launch: a missing firewall must never mean unfiltered egress.
func (s *Sandbox) firewall() firewall.Firewall {
	return firewall.FailClosed{
		Reason:     "the shield firewall is not available in this build",
		ConfigFile: filepath.Join(s.cfg.ConfigDir, config.FileName),
	}
}

// PreStartArgs returns the shield's podman arguments for a container about
// to be created in taskDir (runner.md §1 pre_start_args).
func (s *Sandbox) PreStartArgs(ctx context.Context, container, taskDir string) ([]string, error) {
	return s.firewall().PreStart(ctx, container, taskDir)
}
