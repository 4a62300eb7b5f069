// Package sdactivation is the one implementation of systemd socket
// activation and readiness shared by the three daemons (docs/install.md,
// Socket activation and readiness): listeners are picked by their
// FileDescriptorName=, with the descriptor order as the fallback for units
// that name none, and Type=notify units hear READY=1 once the daemon serves
// and STOPPING=1 when it begins to drain.
package sdactivation

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
)

// Socket is one listening socket a daemon expects from its .socket unit.
type Socket struct {
	// Name is the socket's FileDescriptorName= in the .socket unit.
	Name string
	// Network is what the listener must be: "tcp" or "unix".
	Network string
}

// Listeners returns one listener per wanted socket, in the order of want,
// or nil and no error when systemd did not activate this process (no
// LISTEN_FDS, or LISTEN_PID names another process). The LISTEN_*
// variables are removed either way so children never inherit them, and
// every passed descriptor not returned is closed.
//
// activation.Files rather than activation.ListenersWithNames: the map of
// the latter loses the descriptor order that units without
// FileDescriptorName= (older installs) rely on, and it would turn a
// connected socket (an Accept=yes unit) into a listener that fails on the
// first Accept instead of a clear error at start.
func Listeners(want ...Socket) ([]net.Listener, error) {
	files := activation.Files(true)
	if len(files) == 0 {
		return nil, nil
	}
	defer func() {
		for _, f := range files {
			_ = f.Close() // net.FileListener holds its own duplicate
		}
	}()
	passed := make([]Passed, len(files))
	for i, f := range files {
		passed[i] = Passed{Name: f.Name(), Network: network(f)}
	}
	order, err := Match(passed, want)
	if err != nil {
		return nil, err
	}
	lns := make([]net.Listener, 0, len(want))
	fail := func(err error) ([]net.Listener, error) {
		for _, ln := range lns {
			_ = ln.Close()
		}
		return nil, err
	}
	for i, w := range want {
		f := files[order[i]]
		ln, err := listener(f, w)
		if err != nil {
			return fail(fmt.Errorf("socket activation: descriptor %d (%s): %w", order[i]+3, w.Name, err))
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// Passed describes one descriptor systemd passed.
type Passed struct {
	// Name is its LISTEN_FDNAMES entry (go-systemd's reading: a unit
	// without FileDescriptorName= names each descriptor after the socket
	// unit, a launcher without names yields LISTEN_FD_<n>).
	Name string
	// Network is "unix", "tcp" or "" (anything else).
	Network string
}

// Match maps each wanted socket to the index of its passed descriptor.
// When every wanted name is passed, descriptors are matched by name, and
// a descriptor no one wants is an error. One .socket unit gives all its
// descriptors the same FileDescriptorName=, so wanted sockets that share a
// name are told apart by network (the proxy's Unix and TCP sockets). When
// no wanted name is passed (a unit from before the names), descriptors are
// matched by order and the count must agree. A mix is an error naming the
// missing socket.
func Match(passed []Passed, want []Socket) ([]int, error) {
	at := make(map[string][]int, len(passed))
	names := make([]string, len(passed))
	for i, p := range passed {
		at[p.Name] = append(at[p.Name], i)
		names[i] = p.Name
	}
	group := make(map[string]int, len(want))
	var missing []string
	for _, w := range want {
		group[w.Name]++
		if len(at[w.Name]) == 0 {
			missing = append(missing, w.Name)
		}
	}
	order := make([]int, len(want))
	switch {
	case len(missing) == len(want):
		if len(passed) != len(want) {
			return nil, fmt.Errorf("socket activation passed %d descriptors, it serves %d (%s); fix the .socket unit",
				len(passed), len(want), wantedNames(want))
		}
		for i := range want {
			order[i] = i
		}
		return order, nil
	case len(missing) > 0:
		return nil, fmt.Errorf("socket activation passed no descriptor named %s (got %s); fix FileDescriptorName= in the .socket unit",
			strings.Join(missing, ", "), strings.Join(names, ", "))
	}
	for _, p := range passed {
		if group[p.Name] == 0 {
			return nil, fmt.Errorf("socket activation passed a descriptor named %s, which it does not serve (it serves %s); fix the .socket unit",
				p.Name, wantedNames(want))
		}
	}
	taken := make([]bool, len(passed))
	for i, w := range want {
		cand := at[w.Name]
		if len(cand) != group[w.Name] {
			return nil, fmt.Errorf("socket activation passed %d descriptors named %s, it serves %d; fix the .socket unit",
				len(cand), w.Name, group[w.Name])
		}
		order[i] = -1
		for _, c := range cand {
			if !taken[c] && (len(cand) == 1 || passed[c].Network == w.Network) {
				order[i], taken[c] = c, true
				break
			}
		}
		if order[i] < 0 {
			return nil, fmt.Errorf("socket activation passed no %s socket named %s; fix the ListenStream= lines of the .socket unit",
				w.Network, w.Name)
		}
	}
	return order, nil
}

func wantedNames(want []Socket) string {
	s := make([]string, len(want))
	for i, w := range want {
		s[i] = w.Name
	}
	return strings.Join(s, ", ")
}

// network is "unix" or "tcp" for a stream socket of that family, else "".
func network(f *os.File) string {
	rc, err := f.SyscallConn()
	if err != nil {
		return ""
	}
	var dom, typ int
	var derr, terr error
	if rc.Control(func(fd uintptr) {
		dom, derr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_DOMAIN)
		typ, terr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TYPE)
	}) != nil || derr != nil || terr != nil || typ != syscall.SOCK_STREAM {
		return ""
	}
	switch dom {
	case syscall.AF_UNIX:
		return "unix"
	case syscall.AF_INET, syscall.AF_INET6:
		return "tcp"
	}
	return ""
}

// listener turns a passed descriptor into the listener w describes.
func listener(f *os.File, w Socket) (net.Listener, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var acc int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		acc, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN)
	}); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, fmt.Errorf("not a socket: %w", serr)
	}
	if acc == 0 {
		return nil, errors.New("a connection, not a listening socket (Accept=yes units need the daemon's inetd mode where it has one)")
	}
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, err
	}
	if got := ln.Addr().Network(); got != w.Network {
		_ = ln.Close()
		return nil, fmt.Errorf("a %s socket, want %s; fix the ListenStream= of %s in the .socket unit", got, w.Network, w.Name)
	}
	return ln, nil
}

// Ready tells systemd the daemon serves: its listeners are up and the
// state it answers from (database, tokens) is readable. Type=notify units
// become active only then. Without NOTIFY_SOCKET (no systemd, Type=simple,
// a test) it does nothing.
func Ready() error { return notify(daemon.SdNotifyReady) }

// Stopping tells systemd the daemon has begun to drain (STOPPING=1), so
// `systemctl status` shows deactivating while in-flight requests finish.
func Stopping() error { return notify(daemon.SdNotifyStopping) }

func notify(state string) error {
	// The variable stays set: STOPPING=1 needs it later, and the
	// default NotifyAccess=main ignores any child that would inherit it.
	if _, err := daemon.SdNotify(false, state); err != nil {
		return fmt.Errorf("sd_notify %s: %w", state, err)
	}
	return nil
}
