package podman

import (
	"fmt"
	"net"
	"strconv"
)

// ReservePort binds a TCP listener to an OS-chosen free port on host
// (default 127.0.0.1) and keeps it open; the caller closes it right before
// binding the real service (docs/runner.md, Runtime helpers).
func ReservePort(host string) (net.Listener, int, error) {
	if host == "" {
		host = "127.0.0.1"
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return nil, 0, fmt.Errorf("reserve a free port on %s: %w", host, err)
	}
	return l, l.Addr().(*net.TCPAddr).Port, nil
}

// FindFreePort is ReservePort closing at once; a small race remains, so use
// it only to hand a port to another process.
func FindFreePort(host string) (int, error) {
	l, port, err := ReservePort(host)
	if err != nil {
		return 0, err
	}
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("release port %s: %w", strconv.Itoa(port), err)
	}
	return port, nil
}
