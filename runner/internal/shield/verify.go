package shield

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"terok.dev/sandbox/common/names"
	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/runner/internal/launch"
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
	launch.Mark(ctx, "verify: container.id")
	pid, err := s.fastPID(want, containerID)
	if err != nil && !errors.Is(err, errNotRunning) {
		pid, err = s.ContainerPID(ctx, container)
	}
	launch.Mark(ctx, "verify: container pid")
	if errors.Is(err, errNotRunning) {
		// Already exited: it was created (so the hook applied and verified
		// the ruleset) and can no longer send anything.
		return nil
	}
	if err != nil {
		return err
	}
	text, gone := s.tableOf(ctx, container, pid)
	launch.Mark(ctx, "verify: list netns table")
	if gone {
		// Exited right after starting (a short command): created, so the
		// hook applied the ruleset, and nothing is left to protect.
		return nil
	}
	if text == "" {
		return fmt.Errorf("container %s runs without the shield table in its network namespace; %s", container, hint)
	}
	if errs := verifyEnforcing(dir, text); len(errs) > 0 {
		return fmt.Errorf("container %s: Ruleset verification failed: %s", container, strings.Join(errs, "; "))
	}
	err = verifyResolver(ctx, dir, container, pid)
	launch.Mark(ctx, "verify: resolver ready")
	return err
}

// resolverStartWait bounds how long the verification waits for the
// resolver's own start, which the hook no longer waits for
// (docs/shield-resolver.md, Lifetime): a few milliseconds normally, long
// over by the time podman returns.
const resolverStartWait = 2 * time.Second

// verifyResolver requires, for the resolver tier, that the container's
// resolver reported a successful start in resolver.ready and still runs:
// a resolver that gave up or died leaves the container without DNS, and
// the start fails with its reason instead. initPID is the container's
// process: once it has ended, so has its resolver, and nothing is left
// to check. Ended includes a zombie: the resolver stops as soon as init
// exits, while conmon may not have reaped it yet (a `true` container
// failed its start that way in about one launch of eight).
func verifyResolver(ctx context.Context, dir, container string, initPID int) error {
	tier, err := shieldbundle.ReadTier(dir)
	if err != nil {
		return err
	}
	if tier != shieldbundle.TierResolver {
		return nil
	}
	deadline := time.Now().Add(resolverStartWait)
	for {
		line, err := shieldbundle.ReadResolverReady(dir)
		if err != nil {
			return fmt.Errorf("container %s: read the resolver's start report: %w", container, err)
		}
		_, alive := shieldbundle.ResolverPID(dir)
		switch {
		case line == shieldbundle.ResolverReadyOK && alive:
			return nil
		case line != "" && line != shieldbundle.ResolverReadyOK:
			return fmt.Errorf("container %s: its resolver did not start: %s (see %s)", container, line, filepath.Join(dir, shieldbundle.FileDNSLog))
		case !alive && !processAlive(initPID):
			return nil
		case !alive:
			return fmt.Errorf("container %s: its resolver is not running (no live process in %s; see %s)", container, shieldbundle.FileResolverPID, filepath.Join(dir, shieldbundle.FileDNSLog))
		}
		// Still starting: only under heavy load does this loop at all.
		if time.Now().After(deadline) {
			return fmt.Errorf("container %s: its resolver did not report ready within %s (see %s)", container, resolverStartWait, filepath.Join(dir, shieldbundle.FileDNSLog))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// fastPID reads the container's PID from the pidfile the OCI runtime writes
// into podman's run root (<runroot>/<driver>-containers/<id>/userdata), which
// costs nothing, where `podman inspect` costs ~40 ms per launch. Any
// surprise (custom run root, missing file) falls back to podman inspect.
func (s *Shield) fastPID(short, full string) (int, error) {
	full = strings.TrimSpace(full)
	if !names.LowerHex(full, 64, 64) || !strings.HasPrefix(full, short) {
		return 0, errors.New("no full container id")
	}
	pid, err := s.runtimePID(full)
	if err != nil {
		return 0, err
	}
	if !processAlive(pid) {
		// The runtime wrote it for this container, whose process is gone.
		return 0, fmt.Errorf("container process %d: %w", pid, errNotRunning)
	}
	return pid, nil
}

// runRoot is podman's run root: /run/containers/storage for root,
// $XDG_RUNTIME_DIR/containers rootless (Options.RunRoot overrides).
func (s *Shield) runRoot() (string, error) {
	if s.opts.RunRoot != "" {
		return s.opts.RunRoot, nil
	}
	if s.opts.EUID == 0 {
		return "/run/containers/storage", nil
	}
	xdg := os.Getenv("XDG_RUNTIME_DIR")
	if xdg == "" {
		return "", errors.New("no XDG_RUNTIME_DIR")
	}
	return filepath.Join(xdg, "containers"), nil
}

// userdataDir is the run-root directory of the container whose id is or
// starts with id.
func (s *Shield) userdataDir(id string) (string, error) {
	root, err := s.runRoot()
	if err != nil {
		return "", err
	}
	pattern := id
	if len(id) < 64 {
		pattern += "*"
	}
	matches, _ := filepath.Glob(filepath.Join(root, "*-containers", pattern, "userdata"))
	if len(matches) != 1 {
		return "", errors.New("container run directory not found")
	}
	return matches[0], nil
}

// pidFile is the name of the OCI runtime's pidfile in a container's run
// directory.
const pidFile = "pidfile"

// runtimePID reads the pidfile the OCI runtime wrote for container id.
func (s *Shield) runtimePID(id string) (int, error) {
	dir, err := s.userdataDir(id)
	if err != nil {
		return 0, err
	}
	return readPIDFile(filepath.Join(dir, pidFile))
}

// readPIDFile reads a runtime pidfile: one positive decimal PID.
func readPIDFile(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, errors.New("unreadable pidfile")
	}
	return pid, nil
}

// fastTable lists the table in the netns of pid without `podman unshare`
// (35 ms): root enters directly; a rootless user joins the container's own
// user namespace, which it owns, with nsenter -U. "" on any failure, and
// the caller falls back to the podman unshare path. The listing is terse
// (-t, no set elements), like the hook's own nft verification: the
// enforcing checks are about chains, hooks, policies and rules, and the
// elements cost nft ~45% of its CPU time (2.9 -> 1.6 ms per listing of the
// dev-standard table here), on every launch.
func (s *Shield) fastTable(ctx context.Context, pid int) string {
	nft, err := s.nftPath()
	if err != nil {
		return ""
	}
	if s.opts.EUID == 0 && os.Geteuid() == 0 {
		res, err := s.opts.Tools.RunInNetns(ctx, nsenterTimeout, pid, nft, "-t", "list", "table", "inet", ruleset.Table)
		if err == nil && res.Code == 0 {
			return res.Stdout
		}
	}
	nsenter := s.opts.Tools.LookPath("nsenter", "/usr/bin/nsenter")
	if nsenter == "" {
		return ""
	}
	argv := []string{nsenter, "-t", strconv.Itoa(pid), "-n"}
	if s.opts.EUID != 0 {
		argv = append(argv, "-U")
	}
	argv = append(argv, "--", nft, "-t", "list", "table", "inet", ruleset.Table)
	res, err := s.opts.Tools.Run(ctx, nsenterTimeout, "", argv...)
	if err != nil || res.Code != 0 {
		return ""
	}
	return res.Stdout
}

// tableOf lists the shield table of a container process, telling apart a
// process that is exiting (its network namespace is released before it
// becomes a zombie, and podman may still call it running) from one that runs
// without the table. It retries briefly while the process is alive.
func (s *Shield) tableOf(ctx context.Context, container string, pid int) (text string, gone bool) {
	deadline := time.Now().Add(2 * time.Second)
	for {
		if text = s.fastTable(ctx, pid); text == "" {
			text = s.liveTable(ctx, pid)
		}
		if text != "" {
			return text, false
		}
		if !processAlive(pid) {
			return "", true
		}
		if _, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/ns/net"); err != nil && !errors.Is(err, os.ErrPermission) {
			return "", true
		}
		if _, err := s.ContainerPID(ctx, container); errors.Is(err, errNotRunning) {
			return "", true
		}
		if time.Now().After(deadline) {
			return "", false
		}
		select {
		case <-ctx.Done():
			return "", false
		case <-time.After(50 * time.Millisecond):
		}
	}
}
