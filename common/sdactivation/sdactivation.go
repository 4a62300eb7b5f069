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
func Listeners(program string, want ...Socket) ([]net.Listener, error) {
	files := activation.Files(true)
	if len(files) == 0 {
		return nil, nil
	}
	defer func() {
		for _, f := range files {
			_ = f.Close() // net.FileListener holds its own duplicate
		}
	}()
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = f.Name()
	}
	order, err := Match(program, names, want)
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
			return fail(fmt.Errorf("%s: socket activation: descriptor %d (%s): %w", program, order[i]+3, w.Name, err))
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// Match maps each wanted socket to the index of its passed descriptor.
// names are the descriptor names in order (LISTEN_FDNAMES as go-systemd
// reads it: a unit without FileDescriptorName= names each descriptor after
// the socket unit, and a launcher without names yields LISTEN_FD_<n>).
// When every wanted name is passed, descriptors are matched by name and a
// descriptor no one wants is an error; when none is, by order, and the
// count must agree; a mix is an error naming the missing socket.
func Match(program string, names []string, want []Socket) ([]int, error) {
	at := make(map[string][]int, len(names))
	for i, n := range names {
		at[n] = append(at[n], i)
	}
	var missing []string
	for _, w := range want {
		if len(at[w.Name]) == 0 {
			missing = append(missing, w.Name)
		}
	}
	order := make([]int, len(want))
	switch {
	case len(missing) == len(want):
		if len(names) != len(want) {
			return nil, fmt.Errorf("%s: socket activation passed %d descriptors, it serves %d (%s); fix the .socket unit",
				program, len(names), len(want), wantedNames(want))
		}
		for i := range want {
			order[i] = i
		}
		return order, nil
	case len(missing) > 0:
		return nil, fmt.Errorf("%s: socket activation passed no descriptor named %s (got %s); fix FileDescriptorName= in the .socket unit",
			program, strings.Join(missing, ", "), strings.Join(names, ", "))
	}
	wanted := make(map[string]bool, len(want))
	for i, w := range want {
		if wanted[w.Name] {
			return nil, fmt.Errorf("%s: socket %q wanted twice", program, w.Name)
		}
		wanted[w.Name] = true
		if len(at[w.Name]) > 1 {
			return nil, fmt.Errorf("%s: socket activation passed %d descriptors named %s, it serves one; fix the .socket unit",
				program, len(at[w.Name]), w.Name)
		}
		order[i] = at[w.Name][0]
	}
	for _, n := range names {
		if !wanted[n] {
			return nil, fmt.Errorf("%s: socket activation passed a descriptor named %s, which it does not serve (it serves %s); fix the .socket unit",
				program, n, wantedNames(want))
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
