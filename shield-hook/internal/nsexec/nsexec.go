// Package nsexec runs work inside another process's network namespace from
// a single locked OS thread, and starts helper programs (nft, dnsmasq) there.
//
// setns(2) changes the namespace of the calling thread only. The work runs
// on a dedicated goroutine locked to its thread; a child process forked from
// that thread (os/exec forks from the calling thread) inherits the
// namespace. The original namespace is restored before the thread is
// released; if restoring fails the thread stays locked and dies with the
// goroutine, so no other goroutine ever runs in the container's namespace.
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

// Handle returns the namespace handle (for netlink.NewHandleAt).
func (n *NS) Handle() netns.NsHandle { return n.h }

// Close releases the handle.
func (n *NS) Close() error { return n.h.Close() }

// Do runs fn on a locked OS thread switched into the namespace.
func (n *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(n.h); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter container network namespace: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Thread stays locked: the runtime discards it when this
			// goroutine exits.
			errc <- errors.Join(ferr, fmt.Errorf("restore network namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Timeout bounds every helper command (shield.md §9.7).
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
