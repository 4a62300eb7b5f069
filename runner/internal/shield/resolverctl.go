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

	"golang.org/x/sys/unix"

	"terok.dev/sandbox/common/shieldbundle"
)

// Signalling the per-container resolver (docs/shield.md, "Live
// operations"): the resolver re-reads the domain lists and the
// resolver.open marker on SIGHUP, so a live change of what the container
// may resolve costs one signal. The PID comes from resolver.pid, which the
// hook writes; the process is pinned with a pidfd before its identity is
// checked, and the signal goes through that pidfd, so a PID recycled in
// between is never signalled.

// dnsBroken ends every message about a resolver that should be there but
// is not: without it the container resolves nothing (its resolv.conf names
// 127.0.0.1 only), and only a new start brings up a new resolver.
const dnsBroken = "container DNS is broken. Restart the container to recover."

// daemonKind is a per-container helper process the shield may have to
// signal or stop: the resolver, or the dnsmasq of an old bundle.
type daemonKind struct {
	name    string
	pidFile string
	isOurs  func(pid int, stateDir string) bool
}

var (
	kindResolver = daemonKind{"resolver", shieldbundle.FileResolverPID, shieldbundle.IsOurResolver}
	kindDnsmasq  = daemonKind{"dnsmasq", shieldbundle.FileDnsmasqPID, shieldbundle.IsOurDnsmasq}
)

// pinned is a process held through a pidfd (fd < 0: the kernel has no
// pidfd_open, and the PID is used directly).
type pinned struct {
	pid int
	fd  int
}

func (p pinned) close() {
	if p.fd >= 0 {
		_ = unix.Close(p.fd)
	}
}

func (p pinned) signal(sig unix.Signal) error {
	if p.fd >= 0 {
		return unix.PidfdSendSignal(p.fd, sig, nil, 0)
	}
	return unix.Kill(p.pid, sig)
}

// waitExit waits up to limit for the process to exit (a zombie counts as
// exited): poll(2) on the pidfd, or a short poll of /proc without one.
func (p pinned) waitExit(ctx context.Context, limit time.Duration) bool {
	if p.fd < 0 {
		return waitGone(ctx, p.pid, limit)
	}
	deadline := time.Now().Add(limit)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		// Bounded slices so a cancelled context is noticed.
		ms := int(min(left, 100*time.Millisecond).Milliseconds()) + 1
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}, ms)
		if err == nil && n > 0 {
			return true
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			return waitGone(ctx, p.pid, left)
		}
		if ctx.Err() != nil {
			return false
		}
	}
}

// pinDaemon reads kind's PID file in dir and pins the process it names
// when that process is kind's daemon of dir. present is false when there
// is no PID file at all; a PID file that names nothing of ours gives an
// error saying which (unreadable, dead, not ours), and the stale file is
// removed.
func pinDaemon(dir string, kind daemonKind) (p pinned, present bool, err error) {
	pidPath := filepath.Join(dir, kind.pidFile)
	if !exists(pidPath) {
		return pinned{}, false, nil
	}
	pid, err := shieldbundle.ReadPIDFile(pidPath)
	if err != nil || pid <= 0 {
		_ = os.Remove(pidPath)
		return pinned{}, true, fmt.Errorf("unreadable %s", pidPath)
	}
	fd, ferr := unix.PidfdOpen(pid, 0)
	if ferr != nil {
		if errors.Is(ferr, unix.ESRCH) {
			_ = os.Remove(pidPath)
			return pinned{}, true, fmt.Errorf("%s (pid %d) is dead", kind.name, pid)
		}
		fd = -1
	}
	p = pinned{pid: pid, fd: fd}
	// Checked after pinning: from here on the PID cannot be reused.
	if !processAlive(pid) {
		p.close()
		_ = os.Remove(pidPath)
		return pinned{}, true, fmt.Errorf("%s (pid %d) is dead", kind.name, pid)
	}
	if !kind.isOurs(pid, dir) {
		p.close()
		_ = os.Remove(pidPath)
		return pinned{}, true, fmt.Errorf("PID %d is not the container's %s (stale %s)", pid, kind.name, kind.pidFile)
	}
	return p, true, nil
}

// signalResolver sends sig to the container's resolver. The resolver must
// be there (the caller established that the container runs): a missing,
// dead or foreign one is an error that says DNS is broken.
func (s *Shield) signalResolver(dir string, sig unix.Signal) error {
	p, present, err := pinDaemon(dir, kindResolver)
	if !present {
		return specErrorf("no %s in %s: the container's resolver is not running — %s", shieldbundle.FileResolverPID, dir, dnsBroken)
	}
	if err != nil {
		return specErrorf("%v — %s", err, dnsBroken)
	}
	defer p.close()
	if err := p.signal(sig); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return specErrorf("resolver (pid %d) is dead — %s", p.pid, dnsBroken)
		}
		return specErrorf("signal resolver (pid %d): %v — %s", p.pid, err, dnsBroken)
	}
	return nil
}

// reloadResolver makes the container's resolver re-read its domain lists
// and the resolver.open marker.
func (s *Shield) reloadResolver(dir string) error { return s.signalResolver(dir, unix.SIGHUP) }

// stopDaemon stops kind's daemon of dir if the PID file names one: SIGTERM,
// then SIGKILL if it has not exited after a grace period. It returns the
// PID stopped (0: none was running) and removes the PID file once the
// process is gone. A stale PID file is removed, never signalled.
func stopDaemon(ctx context.Context, dir string, kind daemonKind) (int, error) {
	p, present, err := pinDaemon(dir, kind)
	if !present || err != nil {
		// Nothing of ours runs (a stale file was removed by pinDaemon).
		return 0, nil
	}
	defer p.close()
	pidPath := filepath.Join(dir, kind.pidFile)
	if err := p.signal(unix.SIGTERM); err != nil && !errors.Is(err, unix.ESRCH) {
		return p.pid, fmt.Errorf("stop %s (pid %d): %w", kind.name, p.pid, err)
	}
	if !p.waitExit(ctx, 3*time.Second) {
		if err := p.signal(unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			return p.pid, fmt.Errorf("kill %s (pid %d): %w", kind.name, p.pid, err)
		}
		if !p.waitExit(ctx, 2*time.Second) {
			return p.pid, fmt.Errorf("%s (pid %d) did not exit after SIGKILL", kind.name, p.pid)
		}
	}
	// Remove the file only if it still names the process just stopped (a
	// new start may already have written its own).
	if cur, err := shieldbundle.ReadPIDFile(pidPath); err == nil && cur == p.pid {
		_ = os.Remove(pidPath)
	}
	return p.pid, nil
}

// processAlive: the process exists and is not a zombie.
func processAlive(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return true
	}
	return s[i+2] != 'Z' && s[i+2] != 'X'
}

func waitGone(ctx context.Context, pid int, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
	return true
}
