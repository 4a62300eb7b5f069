package sandbox

import (
	"context"
	"os"
	"strconv"
	"time"

	"terok.dev/sandbox/common/names"
	"terok.dev/sandbox/common/taskend"
)

// EnvTestPauseAfterClaim, when set to a file path, makes Run write its PID
// to that file right after it claimed the container's start and then wait (up to
// ten minutes, or until its context ends) before it starts anything: the
// test hook point for a runner killed mid-start (docs/testing.md, Test
// hook points). Test only; unset in every production path.
const EnvTestPauseAfterClaim = "TEROK_SANDBOX_TEST_PAUSE_AFTER_CLAIM"

// claim is a start claim in progress: join it for the time it was made
// (zero: nothing was written).
type claim func() time.Time

// claimStart writes the starting record for container in the background
// (docs/security-model.md, Tokens that die with their task): from then on
// this process holds the container's bound tokens alive until the
// container's process takes over. A failure is logged; the launch goes on
// (the hook confirms the start anyway, and the tokens' lease bounds the rest).
func (s *Sandbox) claimStart(ctx context.Context, container string) claim {
	if names.ValidateContainerName(container) != nil {
		return func() time.Time { return time.Time{} }
	}
	dir := s.cfg.TaskEndsDir()
	done := make(chan time.Time, 1)
	go func() {
		at := time.Now()
		ok, err := taskend.Claim(dir, container)
		switch {
		case err != nil:
			s.log.Warn("run: could not claim the task's start; its bound tokens depend on the hook's confirmation", "container", container, "err", err)
			at = time.Time{}
		case !ok:
			at = time.Time{} // a live container of that name holds the record; podman will refuse the name
		}
		done <- at
	}()
	return func() time.Time {
		at := <-done
		if p := s.env.Getenv(EnvTestPauseAfterClaim); p != "" && !at.IsZero() {
			s.testPause(ctx, p)
		}
		return at
	}
}

func (s *Sandbox) testPause(ctx context.Context, marker string) {
	s.log.Warn("test hook point: paused after the start claim", "env", EnvTestPauseAfterClaim, "pid", os.Getpid())
	_ = os.WriteFile(marker, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600)
	t := time.NewTimer(10 * time.Minute)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// releaseStart gives a failed start's claim back: the tokens are pending
// again, bounded by their lease.
func (s *Sandbox) releaseStart(container string, claimed time.Time) {
	if claimed.IsZero() {
		return
	}
	if err := taskend.Release(s.cfg.TaskEndsDir(), container); err != nil {
		s.log.Warn("run: could not release the start claim of a failed start", "container", container, "err", err)
	}
}

// confirmStart makes sure the container's init process holds its bound
// tokens once the start succeeded: the shield hook confirmed it at
// createRuntime (one read here), else (a launch without the hook) the
// runner records the process podman reports.
func (s *Sandbox) confirmStart(ctx context.Context, container string, claimed time.Time) {
	if claimed.IsZero() {
		return
	}
	dir := s.cfg.TaskEndsDir()
	if st, err := taskend.ReadStart(dir, container); err == nil && st.Phase == taskend.PhaseRunning && !st.Started.Before(claimed) {
		return
	}
	c, err := s.podman.Inspect(ctx, container)
	if err != nil || c.Pid <= 0 {
		s.log.Warn("run: the container's process is unknown; its bound tokens die when this process ends", "container", container, "err", err, "pid", c.Pid,
			"fix", "check 'podman inspect "+container+"'")
		return
	}
	if err := taskend.Confirm(dir, taskend.NewStart(container, taskend.PhaseRunning, c.Pid, c.ID)); err != nil {
		s.log.Warn("run: could not confirm the task's start; its bound tokens die when this process ends", "container", container, "err", err)
	}
}
