package shield

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
)

// VerifyStarted checks, right after `podman run` succeeded, that the OCI
// hook really protected the new container: the hook writes the container's
// id into container.id at createRuntime (after applying and verifying the
// ruleset, or the container would not exist), and while the container runs
// its netns must hold the enforcing table. A hook that podman silently
// skipped (installed where podman does not look, a descriptor that does not
// match) leaves neither, and the launcher then removes the container.
func (s *Shield) VerifyStarted(ctx context.Context, container, containerID string) error {
	dir, err := s.stateDir()
	if err != nil {
		return err
	}
	want := strings.TrimSpace(containerID)
	if len(want) > 12 {
		want = want[:12]
	}
	got := readTrim(filepath.Join(dir, shieldbundle.FileContainerID))
	hint := "podman did not run the shield's OCI hook: check where the hooks are installed with 'terok-sandbox shield check' and re-run 'terok-sandbox shield setup --user' (or --root)"
	switch {
	case got == "":
		return fmt.Errorf("the shield hook did not run for %s (no %s in %s); %s", container, shieldbundle.FileContainerID, dir, hint)
	case want != "" && got != want:
		return fmt.Errorf("the shield hook did not run for %s (%s names container %s, not %s); %s", container, shieldbundle.FileContainerID, got, want, hint)
	}
	pid, err := s.ContainerPID(ctx, container)
	if errors.Is(err, errNotRunning) {
		// Already exited: it was created (so the hook applied and verified
		// the ruleset) and can no longer send anything.
		return nil
	}
	if err != nil {
		return err
	}
	text := s.liveTable(ctx, pid)
	if text == "" {
		// A container that exited between the inspect and nft (a short
		// command) has no netns left to list; that is not a failure.
		if _, err := s.ContainerPID(ctx, container); errors.Is(err, errNotRunning) {
			return nil
		}
		return fmt.Errorf("container %s runs without the shield table in its network namespace; %s", container, hint)
	}
	interactive := exists(filepath.Join(dir, shieldbundle.FileInteractive))
	if errs := ruleset.VerifyHook(text, interactive); len(errs) > 0 {
		return fmt.Errorf("container %s: Ruleset verification failed: %s", container, strings.Join(errs, "; "))
	}
	return nil
}
