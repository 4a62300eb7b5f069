package testharness

import (
	"fmt"
	"os"

	"terok.dev/sandbox/runner/internal/seccomp"
)

// installSeccomp gives the runner's config root the seccomp profile every
// launch needs (docs/seccomp.md), generated from the host's podman default
// the way `shield setup` does, so tests that never run the setup (bypass
// launches) start like an installed sandbox. Owned by the runner's user,
// 0644, in a 0755 directory of the user's: what seccomp.Load accepts.
func (r *Runner) installSeccomp() error {
	src, err := seccomp.FindPodmanDefault()
	if err != nil {
		return err
	}
	// Install as the harness (root) into a directory of root's, then hand
	// both to the runner's user.
	dst := seccomp.Path(r.Dirs.Config)
	if err := seccomp.Install(src, dst); err != nil {
		return err
	}
	for _, p := range []string{r.Dirs.Config, dst} {
		if err := r.Chown(p); err != nil {
			return fmt.Errorf("seccomp profile: %w", err)
		}
	}
	if err := os.Chmod(dst, 0o644); err != nil {
		return fmt.Errorf("seccomp profile: %w", err)
	}
	return nil
}
