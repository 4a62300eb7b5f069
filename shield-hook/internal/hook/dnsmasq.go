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

	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/shield-hook/internal/nsexec"
)

// startDnsmasq starts the per-container dnsmasq inside the container netns
// (shield.md §9.5 step 6, §10); the caller has set loopback up. It runs
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

// poststop stops the container's dnsmasq (§9.6). A missing or unparseable
// PID file means there is nothing to do; a PID that is not our dnsmasq (the
// PID was recycled) is never signalled, only its stale file removed.
func poststop(dir string) error {
	stopOurs(dir, 3*time.Second)
	return nil
}

// stopOurs sends SIGTERM to the dnsmasq named by the PID file when it passes
// the identity check, waits up to wait for it to exit, and removes the PID
// file when it is stale or the process is gone.
func stopOurs(dir string, wait time.Duration) {
	pidPath := filepath.Join(dir, shieldbundle.FileDnsmasqPID)
	pid, err := shieldbundle.ReadPIDFile(pidPath)
	if err != nil || pid <= 0 {
		return
	}
	if !shieldbundle.IsOurDnsmasq(pid, dir) {
		_ = os.Remove(pidPath)
		return
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) || !shieldbundle.IsOurDnsmasq(pid, dir) {
			_ = os.Remove(pidPath)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
