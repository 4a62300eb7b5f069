package hook

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/common/taskend"
	"terok.dev/sandbox/shield-hook/internal/nsexec"
)

// startDnsmasq starts the per-container dnsmasq inside the container netns
// (docs/shield-hook.md, What createRuntime does); the caller has set loopback up. It runs
// concurrently with the ruleset's application. dnsmasq lives in the host's PID and mount
// namespaces, so the poststop stage must stop it.
func startDnsmasq(ctx context.Context, ns *nsexec.NS, dir string) error {
	bin, err := nsexec.LookPath("dnsmasq", "/usr/sbin/dnsmasq")
	if err != nil {
		return err
	}
	pidPath := filepath.Join(dir, shieldbundle.FileDnsmasqPID)
	// A PID file left by an earlier start of this container (restart without
	// poststop): stop that dnsmasq if it is ours, then forget the file so the
	// wait below only accepts a fresh one.
	stopOurs(dir, 2*time.Second)
	if err := shieldbundle.RemoveIfExists(pidPath); err != nil {
		return err
	}
	if _, err := ns.Run(ctx, nil, append([]string{bin}, shieldbundle.DnsmasqArgs(dir)...)...); err != nil {
		return fmt.Errorf("start dnsmasq: %w (see %s)", err, filepath.Join(dir, shieldbundle.FileDnsmasqLog))
	}
	// dnsmasq's original process exits only once the daemon has written
	// the PID file and finished starting (it waits on a pipe the daemon
	// closes then), so the file is normally there at the first look. The
	// short poll covers a dnsmasq that behaves otherwise.
	deadline := time.Now().Add(defaultDnsmasqWait)
	for {
		pid, err := shieldbundle.ReadPIDFile(pidPath)
		if err == nil && pid > 0 && shieldbundle.IsOurDnsmasq(pid, dir) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dnsmasq started but %s did not name a running dnsmasq within %s", pidPath, defaultDnsmasqWait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(dnsmasqPoll):
		}
	}
}

// dnsmasqPoll is the PID-file poll interval after the first look.
const dnsmasqPoll = 5 * time.Millisecond

func loopbackUp(h *netlink.Handle) error {
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find loopback in container netns: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set loopback up in container netns: %w", err)
	}
	return nil
}

// poststop stops the container's resolver and, for a bundle of an older
// tool, its dnsmasq (docs/shield-hook.md, poststop). A missing or
// unparseable PID file means there is nothing to do; a PID that is not
// ours (the PID was recycled) is never signalled, only its stale file
// removed.
func poststop(dir string) error {
	stopResolver(dir, 3*time.Second)
	stopOurs(dir, 3*time.Second)
	return nil
}

// recordEnd records the container's end in the task-ends directory its
// annotation names (docs/security-model.md, Tokens that die with their
// task): absent, nothing to do; one that is not an absolute path ending in
// task-ends is an error, so a typo never scatters records.
func recordEnd(ann map[string]string, id string) error {
	dir, err := taskEndsDir(ann)
	if err != nil || dir == "" {
		return err
	}
	if len(id) > 12 {
		id = id[:12]
	}
	if err := taskend.Record(dir, taskend.End{Container: ann[shieldbundle.AnnName], Reason: taskend.ReasonExited, ID: id}); err != nil {
		return fmt.Errorf("poststop: %w", err)
	}
	return nil
}

// confirmStart records at createRuntime that the container's init (pid,
// from the OCI state) holds the container's bound tokens alive: when it
// ends without a poststop (conmon killed with it), the daemons see it
// (docs/security-model.md, Tokens that die with their task).
func confirmStart(ann map[string]string, pid int, id string) error {
	dir, err := taskEndsDir(ann)
	if err != nil || dir == "" {
		return err
	}
	if err := taskend.Confirm(dir, taskend.NewStart(ann[shieldbundle.AnnName], taskend.PhaseRunning, pid, id)); err != nil {
		return fmt.Errorf("createRuntime: %w", err)
	}
	return nil
}

// taskEndsDir is the directory the annotation names ("" when absent); one
// that is not an absolute path ending in task-ends is an error, so a typo
// never scatters records.
func taskEndsDir(ann map[string]string) (string, error) {
	dir := ann[shieldbundle.AnnTaskEnds]
	if dir == "" {
		return "", nil
	}
	if !filepath.IsAbs(dir) || filepath.Base(filepath.Clean(dir)) != "task-ends" {
		return "", fmt.Errorf("annotation %s=%q is not an absolute path to a task-ends directory", shieldbundle.AnnTaskEnds, dir)
	}
	return filepath.Clean(dir), nil
}

// stopOurs stops the per-container dnsmasq of dir (stopPIDFile).
func stopOurs(dir string, wait time.Duration) {
	stopPIDFile(filepath.Join(dir, shieldbundle.FileDnsmasqPID), func(pid int) bool { return shieldbundle.IsOurDnsmasq(pid, dir) }, wait)
}

// stopPIDFile sends SIGTERM to the process named by the PID file when it
// passes the identity check isOurs, waits up to wait for it to exit, and
// removes the PID file when it is stale or the process is gone.
//
// The process is pinned with a pidfd before the identity check is repeated
// and the signal sent through it, so a PID recycled in between is never
// signalled; the exit is awaited with poll(2) on the pidfd instead of a
// sleep loop (poststop used to spend 20 ms in one sleep). Kernels without
// pidfd fall back to kill(2) and a short poll.
func stopPIDFile(pidPath string, isOurs func(pid int) bool, wait time.Duration) {
	pid, err := shieldbundle.ReadPIDFile(pidPath)
	if err != nil || pid <= 0 {
		return
	}
	pidfd, perr := unix.PidfdOpen(pid, 0)
	if perr == nil {
		defer unix.Close(pidfd)
	}
	if !isOurs(pid) {
		_ = os.Remove(pidPath)
		return
	}
	gone := func() bool {
		return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) || !isOurs(pid)
	}
	if perr == nil {
		if unix.PidfdSendSignal(pidfd, unix.SIGTERM, nil, 0) == nil {
			deadline := time.Now().Add(wait)
			for {
				left := time.Until(deadline)
				if left <= 0 {
					// Ignored SIGTERM for the whole wait: nothing of ours
					// may outlive the container.
					_ = unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
					return
				}
				fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
				n, err := unix.Poll(fds, int(left.Milliseconds())+1)
				if errors.Is(err, unix.EINTR) {
					continue
				}
				if err == nil && n > 0 {
					break // exited (a zombie at most)
				}
				if err != nil {
					return
				}
			}
		}
		if gone() {
			_ = os.Remove(pidPath)
		}
		return
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		if gone() {
			_ = os.Remove(pidPath)
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}
