package daemonctl

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/systemd"
)

// Modes a daemon's status reports (docs/gate.md, Operating it;
// docs/credential-proxy.md, Operating it).
const (
	ModeSystemd = "systemd"
	ModeDaemon  = "daemon"
	ModeNone    = "none"
)

// The binaries of the two daemons the runner manages.
const (
	GateBinary  = "terok-gate"
	ProxyBinary = "terok-credential-proxy"
)

// SystemdControl is what a daemon's manager needs from systemctl; Systemd
// implements it, tests substitute a recorder.
type SystemdControl interface {
	Available(ctx context.Context) bool
	IsActive(ctx context.Context, unit string) bool
	Call(ctx context.Context, args ...string) error
	Install(ctx context.Context, dir string, units []Unit, socket string) error
	Uninstall(ctx context.Context, dir string, names []string, socket string) error
}

// Daemon describes one host daemon the runner manages: its binary and its
// systemd user units with their version stamp. Gate and Proxy are the two.
type Daemon struct {
	Binary      string
	SocketUnit  string
	ServiceUnit string
	// Legacy names units of older versions that install and uninstall
	// remove as well.
	Legacy      []string
	StampPrefix string
	UnitVersion int
}

// Gate is terok-gate.
func Gate() Daemon {
	return Daemon{
		Binary:      GateBinary,
		SocketUnit:  systemd.GateSocketName,
		ServiceUnit: systemd.GateServiceName,
		Legacy:      []string{systemd.LegacyGateServiceName},
		StampPrefix: systemd.GateStampPrefix,
		UnitVersion: systemd.GateUnitVersion,
	}
}

// Proxy is terok-credential-proxy.
func Proxy() Daemon {
	return Daemon{
		Binary:      ProxyBinary,
		SocketUnit:  systemd.ProxySocketName,
		ServiceUnit: systemd.ProxyServiceName,
		StampPrefix: systemd.ProxyStampPrefix,
		UnitVersion: systemd.ProxyUnitVersion,
	}
}

// UnitNames are every unit file of d: socket, service, then the legacy ones.
func (d Daemon) UnitNames() []string {
	return append([]string{d.SocketUnit, d.ServiceUnit}, d.Legacy...)
}

// Outdated reports whether an installed stamp (InstalledVersion) is older
// than d.UnitVersion; a missing unit is not outdated, an unversioned one is.
func (d Daemon) Outdated(installed int) bool {
	return installed == StampUnversioned || (installed >= 0 && installed < d.UnitVersion)
}

// Instance is a Daemon of one configuration: the environment that decides
// where its user units live, and its PID file.
type Instance struct {
	Daemon
	Env     config.Env
	PIDFile string
	// FindBinary locates d.Binary; nil means FindBinary.
	FindBinary func(name string) (string, error)
}

// Find locates the daemon's binary.
func (i Instance) Find() (string, error) {
	if i.FindBinary != nil {
		return i.FindBinary(i.Binary)
	}
	return FindBinary(i.Binary)
}

// UnitPath is name's path in the user unit directory; "" when user units
// are refused here (root, or a unit directory outside the home).
func (i Instance) UnitPath(name string) string {
	dir, err := UserUnitDir(i.Env)
	if err != nil {
		return ""
	}
	return filepath.Join(dir, name)
}

// SocketInstalled: the socket unit exists in the user unit directory.
func (i Instance) SocketInstalled() bool {
	p := i.UnitPath(i.SocketUnit)
	if p == "" {
		return false
	}
	_, err := os.Stat(p)
	return err == nil
}

// InstalledVersion is the stamp of the installed socket unit
// (StampMissing, StampUnversioned or the number).
func (i Instance) InstalledVersion() int {
	p := i.UnitPath(i.SocketUnit)
	if p == "" {
		return StampMissing
	}
	return InstalledVersion(p, i.StampPrefix)
}

// OutdatedWarning is the status warning for installed units older than
// UnitVersion, or "".
func (i Instance) OutdatedWarning() string {
	if !i.SocketInstalled() {
		return ""
	}
	if v := i.InstalledVersion(); i.Outdated(v) {
		return fmt.Sprintf("Systemd units are outdated (installed %s, expected v%d).", DescribeVersion(v), i.UnitVersion)
	}
	return ""
}

// DaemonPID is the PID of our running daemon, if any (PID file, identity
// check, signal 0).
func (i Instance) DaemonPID() (int, bool) { return Running(i.PIDFile, i.Binary) }

// StopDaemon signals our daemon (identity-checked) and removes the PID
// file; it reports whether one was signalled.
func (i Instance) StopDaemon() bool { return Stop(i.PIDFile, i.Binary) }

// Alive reports whether pid exists and is not a zombie.
func Alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && !bytes.Contains(stat, []byte(") Z "))
}

// Message is an operator-facing error: capitalised full sentences that end
// in what to run. Its text is the whole message, printed as is.
type Message string

func (m Message) Error() string { return string(m) }

// Messagef formats a Message.
func Messagef(format string, a ...any) error { return Message(fmt.Sprintf(format, a...)) }

// Readiness polling: every ProbeEvery for up to ReadyTotal.
const (
	ReadyTotal = 5 * time.Second
	ProbeEvery = 200 * time.Millisecond
)

// Poll calls try every ProbeEvery until it returns true (true), or
// ReadyTotal has passed or ctx ends (false).
func Poll(ctx context.Context, try func(context.Context) bool) bool {
	deadline := time.Now().Add(ReadyTotal)
	for {
		if try(ctx) {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(ProbeEvery):
		}
	}
}

// Healthy probes GET http://127.0.0.1:<port>/-/health within timeout: true
// on 200. No environment proxy, no keep-alive.
func Healthy(ctx context.Context, port int, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/-/health", port), nil)
	if err != nil {
		return false
	}
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	return resp.StatusCode == http.StatusOK
}

// WaitPort tries to connect to 127.0.0.1:port every ProbeEvery for up to
// ReadyTotal.
func WaitPort(ctx context.Context, port int) bool {
	return Poll(ctx, func(ctx context.Context) bool {
		d := net.Dialer{Timeout: time.Second}
		c, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			return false
		}
		_ = c.Close()
		return true
	})
}
