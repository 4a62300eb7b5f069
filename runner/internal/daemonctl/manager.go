package daemonctl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"terok.dev/sandbox/common/config"
)

// Base is what the manager of every daemon holds: one configuration, the
// environment that decides where user units live, the systemd seam, the
// binary lookup and the log.
type Base struct {
	Cfg     config.Config
	Env     config.Env
	Systemd SystemdControl
	// FindBinary locates the daemon's binary; nil means FindBinary.
	FindBinary func(name string) (string, error)
	Log        *slog.Logger
}

// NewBase is a Base using the real systemctl; a nil log discards.
func NewBase(cfg config.Config, env config.Env, log *slog.Logger) Base {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return Base{Cfg: cfg, Env: env, Systemd: Systemd{}, Log: log}
}

// Getenv reads Env ("" when it has no reader).
func (b Base) Getenv(k string) string {
	if b.Env.Getenv == nil {
		return ""
	}
	return b.Env.Getenv(k)
}

// SystemdUsable: the user instance answers and user units may be installed
// here (never as root, never outside the home directory).
func (b Base) SystemdUsable(ctx context.Context) bool {
	if _, err := UserUnitDir(b.Env); err != nil {
		return false
	}
	return b.Systemd.Available(ctx)
}

// Manager is the lifecycle every daemon shares (docs/gate.md, Operating it;
// docs/credential-proxy.md, Operating it): its units (render, install,
// uninstall, stamp), its PID-file daemon (find, stop) and their status
// parts. What differs between the daemons is the Daemon data; GateManager
// and ProxyManager add their own status, start and ensure.
type Manager struct {
	Base
	Daemon Daemon
}

// NewManager is d's manager of cfg using the real systemctl.
func NewManager(d Daemon, cfg config.Config, env config.Env, log *slog.Logger) Manager {
	return Manager{Base: NewBase(cfg, env, log), Daemon: d}
}

// Instance is the daemon of this configuration with its PID file.
func (m *Manager) Instance() Instance {
	return Instance{Daemon: m.Daemon, Env: m.Env, PIDFile: m.Daemon.PIDFile(m.Cfg), FindBinary: m.FindBinary}
}

// Find locates the daemon's binary.
func (m *Manager) Find() (string, error) { return m.Instance().Find() }

// SocketInstalled: the socket unit exists in the user unit directory.
func (m *Manager) SocketInstalled() bool { return m.Instance().SocketInstalled() }

// InstalledVersion is the stamp of the installed socket unit
// (StampMissing, StampUnversioned or the number).
func (m *Manager) InstalledVersion() int { return m.Instance().InstalledVersion() }

// Outdated reports whether installed (a stamp) is older than the daemon's
// unit version.
func (m *Manager) Outdated(installed int) bool { return m.Daemon.Outdated(installed) }

// DaemonPID is the PID of our running daemon, if any (PID file, identity
// check with this configuration's PID file path, signal 0).
func (m *Manager) DaemonPID() (int, bool) { return m.Instance().DaemonPID() }

// AuditArg is the daemon's --audit-file value (docs/audit.md, Files,
// rotation, modes).
func (m *Manager) AuditArg() string { return m.Daemon.AuditArg(m.Cfg) }

// RenderUnits renders the socket and service for bin and port.
func (m *Manager) RenderUnits(bin string, port int) ([]Unit, error) {
	return m.Daemon.RenderUnits(m.Cfg, bin, port)
}

// Units finds the daemon's binary and renders its units for port.
func (m *Manager) Units(port int) ([]Unit, error) {
	bin, err := m.Find()
	if err != nil {
		return nil, err
	}
	return m.RenderUnits(bin, port)
}

// InstallUnits is the install skeleton: find the binary, render the units
// for port, prepare (what the daemon needs before it can start; nil =
// nothing), remove the units of older versions (systemd would keep an old
// template next to the new service), write both, reload, enable and
// restart the socket.
func (m *Manager) InstallUnits(ctx context.Context, dir string, port int, prepare func() error) error {
	units, err := m.Units(port)
	if err != nil {
		return err
	}
	if prepare != nil {
		if err := prepare(); err != nil {
			return err
		}
	}
	for _, old := range m.Daemon.Legacy {
		if err := os.Remove(filepath.Join(dir, old)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove the old unit %s: %w", old, err)
		}
	}
	return m.Systemd.Install(ctx, dir, units, m.Daemon.SocketUnit)
}

// UninstallUnits disables the socket and removes every unit file of the
// daemon (those of older versions included) from dir.
func (m *Manager) UninstallUnits(ctx context.Context, dir string) error {
	return m.Systemd.Uninstall(ctx, dir, m.Daemon.UnitNames(), m.Daemon.SocketUnit)
}

// StopWait bounds how long StopDaemon waits for a daemon to exit after
// SIGTERM: the gate and the proxy each give running exchanges up to 10 s.
const StopWait = 10 * time.Second

// StopDaemon sends SIGTERM to our daemon (identity-checked), removes the
// PID file and waits up to StopWait for the process to go, so a start
// right after it does not find the old process still answering on the
// port; it reports whether one was signalled.
func (m *Manager) StopDaemon() bool {
	pid, ok := m.DaemonPID()
	stopped := m.Instance().StopDaemon()
	if ok && stopped {
		deadline := time.Now().Add(StopWait)
		for time.Now().Before(deadline) && Alive(pid) {
			time.Sleep(25 * time.Millisecond)
		}
	}
	return stopped
}
