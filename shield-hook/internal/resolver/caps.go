package resolver

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// dropPrivileges leaves the resolver with CAP_NET_ADMIN alone, which it
// still needs after start: SO_MARK on every new upstream socket and the
// nftables netlink requests (learned sets, the live table's policy). It
// clears the ambient set, drops every other capability from the bounding
// set, sets permitted and effective to CAP_NET_ADMIN and inheritable to
// none, and sets no_new_privs — on every thread of the process, since
// capabilities and no_new_privs are per thread on Linux and Go runs
// goroutines on many (syscall.AllThreadsSyscall; the hook is built with
// CGO_ENABLED=0, without which that call fails and the resolver does not
// start). Called once the sockets are bound and the netlink sockets open
// (docs/shield-resolver.md, Privileges). In a user namespace (rootless)
// the capabilities are that namespace's, dropped the same way.
func dropPrivileges() error {
	last, err := lastCap()
	if err != nil {
		return err
	}
	// Each step below is skipped when the calling thread already has
	// what it would set. All threads do then: each was cloned from the
	// one the exec started, which the hook's forking thread prepared
	// (NarrowForkThread), and nothing in this process changes a
	// thread's credentials before this point. Every step that is not
	// skipped is one syscall.AllThreadsSyscall (a stop of the world that
	// signals every thread).
	if on, err := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0); err != nil || on != 1 {
		if _, _, e := syscall.AllThreadsSyscall6(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0); e != 0 {
			return fmt.Errorf("set no_new_privs: %w", e)
		}
	}
	if ambientSet(last) {
		if _, _, e := syscall.AllThreadsSyscall6(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0, 0); e != 0 {
			return fmt.Errorf("clear the ambient capabilities: %w", e)
		}
	}
	// The bounding set first: dropping from it needs CAP_SETPCAP, which
	// the capset below removes.
	for c := 0; c <= last; c++ {
		if c == unix.CAP_NET_ADMIN {
			continue
		}
		// Already out of the bounding set (a runtime that started the
		// hook with fewer): nothing to drop, and no CAP_SETPCAP needed.
		if in, err := unix.PrctlRetInt(unix.PR_CAPBSET_READ, uintptr(c), 0, 0, 0); err == nil && in == 0 {
			continue
		}
		if _, _, e := syscall.AllThreadsSyscall6(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0, 0); e != 0 {
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, e)
		}
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	data[unix.CAP_NET_ADMIN/32].Effective = 1 << (unix.CAP_NET_ADMIN % 32)
	data[unix.CAP_NET_ADMIN/32].Permitted = 1 << (unix.CAP_NET_ADMIN % 32)
	var now [2]unix.CapUserData
	if unix.Capget(&hdr, &now[0]) == nil && now == data {
		return nil
	}
	hdr = unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	if _, _, e := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return fmt.Errorf("set capabilities to CAP_NET_ADMIN only: %w", e)
	}
	return nil
}

// ambientSet reports whether the calling thread has any ambient
// capability (or the kernel cannot say).
func ambientSet(last int) bool {
	for c := 0; c <= last; c++ {
		if in, err := unix.PrctlRetInt(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_IS_SET, uintptr(c), 0, 0); err != nil || in != 0 {
			return true
		}
	}
	return false
}

// NarrowForkThread prepares the calling thread, which must be locked to
// its goroutine and discarded afterwards (nsexec.NS.Do's threads are; the
// runtime creates no thread from a locked one), to fork the resolver with
// the privileges dropPrivileges leaves it: every capability but
// CAP_NET_ADMIN dropped from the bounding set, the ambient and inheritable
// sets emptied, no_new_privs set. The hook calls it on the thread that
// forks the resolver: the child inherits all of that, so its exec (as
// uid 0, whose permitted and effective sets after exec are the bounding
// set plus the inheritable one) leaves it with CAP_NET_ADMIN alone from
// its first instruction, and dropPrivileges finds nothing left to do.
// Each step dropPrivileges does is one syscall.AllThreadsSyscall, which
// stops the world and signals every thread: the ~40 bounding-set drops
// were about half of the resolver's start-up CPU, the three others
// (no_new_privs, ambient, capset) another ~0.6 ms (docs/shield-resolver.md,
// Privileges). Best effort: without CAP_SETPCAP nothing is dropped from
// the bounding set here, and dropPrivileges, which checks and drops
// whatever is left on every thread, stays the authority.
func NarrowForkThread() {
	last, err := lastCap()
	if err != nil {
		return
	}
	for c := 0; c <= last; c++ {
		if c != unix.CAP_NET_ADMIN {
			_ = unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0)
		}
	}
	_ = unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if unix.Capget(&hdr, &data[0]) == nil {
		data[0].Inheritable, data[1].Inheritable = 0, 0
		_ = unix.Capset(&hdr, &data[0]) // the raw syscall: this thread only
	}
	_ = unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
}

// lastCap is the highest capability number the running kernel knows.
func lastCap() (int, error) {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 0, fmt.Errorf("read the kernel's last capability: %w", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n < unix.CAP_NET_ADMIN || n > 63 {
		return 0, fmt.Errorf("kernel's last capability %q: not a capability number", strings.TrimSpace(string(b)))
	}
	return n, nil
}
