// Package listen opens the proxy's listeners (docs/credential-proxy.md, Design):
// systemd-inherited sockets (common/sdactivation), otherwise its own
// Unix socket (mode 0600, never replacing a non-socket or a live socket)
// and TCP on 127.0.0.1 only.
package listen

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"terok.dev/sandbox/common/atomicfile"
	"terok.dev/sandbox/common/sdactivation"
)

// Listeners are the HTTP listeners the proxy serves on.
type Listeners struct {
	Unix net.Listener
	TCP  net.Listener // nil when no TCP port
	// Inherited is true when both came from systemd.
	Inherited bool
	// ownSocket is the path of a socket file this process created.
	ownSocket string
}

// Close closes both listeners and removes a socket file this process made.
func (l *Listeners) Close() {
	if l.Unix != nil {
		_ = l.Unix.Close()
	}
	if l.TCP != nil {
		_ = l.TCP.Close()
	}
	if l.ownSocket != "" {
		_ = os.Remove(l.ownSocket)
	}
}

// Activation sockets of terok-credential-proxy.socket (docs/install.md,
// Socket activation and readiness): FileDescriptorName=credential-proxy
// names both, told apart by network. A unit without the name passes them
// in its ListenStream= order, Unix first.
var (
	UnixSocket = sdactivation.Socket{Name: "credential-proxy", Network: "unix"}
	TCPSocket  = sdactivation.Socket{Name: "credential-proxy", Network: "tcp"}
)

// Inherited returns systemd's two sockets, or ok false when systemd did
// not activate this process. Any other set of descriptors is an error
// that names the fix in the .socket unit.
func Inherited() (unix, tcp net.Listener, ok bool, err error) {
	lns, err := sdactivation.Listeners(UnixSocket, TCPSocket)
	if err != nil || lns == nil {
		return nil, nil, false, err
	}
	return lns[0], lns[1], true, nil
}

// Unix listens on path with mode 0600. An existing non-socket is never
// removed; a socket someone still answers on is never taken over; a stale
// socket is replaced.
func Unix(path string) (net.Listener, error) {
	fi, err := os.Lstat(path)
	switch {
	case err == nil && fi.Mode().Type() != fs.ModeSocket:
		return nil, refusal("Refusing to remove non-socket path: " + path)
	case err == nil:
		if c, derr := net.DialTimeout("unix", path, time.Second); derr == nil {
			_ = c.Close()
			return nil, refusal("Socket path already in use: " + path)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("inspect socket path %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create socket directory for %s: %w", path, err)
	}
	// The socket must never exist with wider permissions, not even between
	// bind and chmod; startup is single-threaded at this point.
	old := syscall.Umask(0o177)
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("chmod 0600 %s: %w", path, err)
	}
	if ul, ok := l.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(true)
	}
	return l, nil
}

// TCP listens on 127.0.0.1:port, never on another address.
func TCP(port int) (net.Listener, error) {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w (is another proxy running? try `terok-sandbox proxy status`)", addr, err)
	}
	return l, nil
}

// Open returns the proxy's listeners: inherited ones when systemd
// activated the proxy, else its own.
func Open(socketPath string, port int) (*Listeners, error) {
	u, t, ok, err := Inherited()
	if err != nil {
		return nil, err
	}
	if ok {
		return &Listeners{Unix: u, TCP: t, Inherited: true}, nil
	}
	u, err = Unix(socketPath)
	if err != nil {
		return nil, err
	}
	ls := &Listeners{Unix: u}
	if port > 0 {
		t, err = TCP(port)
		if err != nil {
			_ = u.Close()
			return nil, err
		}
		ls.TCP = t
	}
	return ls, nil
}

// WritePID writes the PID file (0644 is not needed by anyone; 0600).
func WritePID(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create PID file directory for %s: %w", path, err)
	}
	if err := atomicfile.WriteFile(path, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		return fmt.Errorf("write PID file %s: %w", path, err)
	}
	return nil
}

// refusal is a startup refusal worded exactly as the spec words it.
type refusal string

func (r refusal) Error() string { return string(r) }
