// Package nsexec runs work inside another process's network namespace from
// a dedicated OS thread, and starts helper programs (nft, dnsmasq) there.
//
// setns(2) changes the namespace of the calling thread only. The work runs
// on a new goroutine locked to its thread; a child process forked from that
// thread (os/exec forks from the calling thread) inherits the namespace, and
// so does a socket created there (e.g. a netlink handle), for its whole life.
// The thread is never switched back: in a rootless user namespace the hook
// may enter the container's namespace but lacks the right to re-enter the
// host's (setns back fails with EPERM). The goroutine ends still locked, so
// the Go runtime destroys the thread instead of reusing it, and no other
// goroutine ever runs in the container's namespace. (vishvananda/netlink's
// NewHandleAt switches back and ignores a failure, so it is not used.)
package nsexec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// NS is an open handle on a network namespace. Holding the file descriptor
// (rather than re-opening /proc/<pid>/ns/net for each step) pins the
// namespace even if the PID is recycled.
type NS struct{ h netns.NsHandle }

// FromPID opens the network namespace of pid.
func FromPID(pid int) (*NS, error) {
	path := fmt.Sprintf("/proc/%d/ns/net", pid)
	h, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("network namespace file missing for pid %d: %s: %w", pid, path, err)
	}
	return &NS{h: h}, nil
}

// FromPath opens the network namespace file at path (e.g. /run/netns/NAME).
func FromPath(path string) (*NS, error) {
	h, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %s: %w", path, err)
	}
	return &NS{h: h}, nil
}

// Close releases the handle.
func (n *NS) Close() error { return n.h.Close() }

// Do runs fn on a fresh OS thread switched into the namespace. The thread
// is discarded afterwards (see the package comment).
func (n *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the runtime terminates the thread when this
		// goroutine returns.
		runtime.LockOSThread()
		if err := netns.Set(n.h); err != nil {
			errc <- fmt.Errorf("enter container network namespace: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Netlink returns a netlink handle whose socket lives in the namespace.
func (n *NS) Netlink() (*netlink.Handle, error) {
	var h *netlink.Handle
	err := n.Do(func() error {
		var err error
		h, err = netlink.NewHandle()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netlink socket in container netns: %w", err)
	}
	return h, nil
}

// Timeout bounds every helper command (docs/shield-hook.md, Entering the network namespace).
const Timeout = 30 * time.Second

// LookPath finds a helper on PATH, then at the fallback locations.
func LookPath(name string, fallbacks ...string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, f := range fallbacks {
		if fi, err := os.Stat(f); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return f, nil
		}
	}
	return "", fmt.Errorf("%s not found on PATH or in %s; install it (Debian: apt-get install %s)", name, strings.Join(fallbacks, ", "), pkgFor(name))
}

func pkgFor(name string) string {
	if name == "nft" {
		return "nftables"
	}
	if name == "dnsmasq" {
		return "dnsmasq-base"
	}
	return name
}

// Run executes argv inside the namespace with stdin, returning stdout. A
// failure carries the exit status and the combined output (some nft
// versions report errors on stdout).
func (n *NS) Run(ctx context.Context, stdin []byte, argv ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	err := n.Do(func() error {
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		if stdin != nil {
			cmd.Stdin = bytes.NewReader(stdin)
		}
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		// A daemonising helper (dnsmasq) could leave a grandchild holding
		// the output pipes; do not wait for them longer than this once the
		// direct child has exited.
		cmd.WaitDelay = 2 * time.Second
		return cmd.Run()
	})
	if err == nil || errors.Is(err, exec.ErrWaitDelay) {
		return stdout.String(), nil
	}
	shown := strings.Join(argv, " ")
	if ctx.Err() == context.DeadlineExceeded {
		return "", fmt.Errorf("command timed out after %s in the container netns: cmd=%s", Timeout, shown)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		out := strings.TrimSpace(stderr.String() + stdout.String())
		if out == "" {
			out = "(no output)"
		}
		return "", fmt.Errorf("command failed (exit %d) in the container netns: cmd=%s:\n%s", ee.ExitCode(), shown, out)
	}
	return "", fmt.Errorf("run %s in the container netns: %w", shown, err)
}
