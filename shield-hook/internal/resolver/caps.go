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
	if _, _, e := syscall.AllThreadsSyscall6(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0); e != 0 {
		return fmt.Errorf("set no_new_privs: %w", e)
	}
	if _, _, e := syscall.AllThreadsSyscall6(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0, 0); e != 0 {
		return fmt.Errorf("clear the ambient capabilities: %w", e)
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
	if _, _, e := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return fmt.Errorf("set capabilities to CAP_NET_ADMIN only: %w", e)
	}
	return nil
}

// NarrowThreadBoundingSet drops every capability but CAP_NET_ADMIN from
// the bounding set of the calling thread only, which must be locked to
// its goroutine and discarded afterwards (nsexec.NS.Do's threads are; the
// runtime creates no thread from a locked one). The hook calls it on the
// thread that forks the resolver: the child inherits that bounding set,
// so its exec (as uid 0, whose permitted set after exec is the bounding
// set) leaves it with CAP_NET_ADMIN alone from its first instruction, and
// dropPrivileges finds no bounding-set entry left to drop. Each such drop
// is one syscall.AllThreadsSyscall, which stops the world and signals
// every thread: the ~40 of them were about half of the resolver's start-up
// CPU (docs/shield-resolver.md, Privileges). Best effort: without
// CAP_SETPCAP nothing is dropped here, and dropPrivileges, which checks
// and drops whatever is left on every thread, stays the authority.
func NarrowThreadBoundingSet() {
	last, err := lastCap()
	if err != nil {
		return
	}
	for c := 0; c <= last; c++ {
		if c != unix.CAP_NET_ADMIN {
			_ = unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0)
		}
	}
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
