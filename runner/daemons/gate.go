package daemons

import (
	"context"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/runner/internal/daemonctl"
)

// Gate manages the gate of one configuration. It holds no state of its
// own: every call reads the units, the PID file and systemd afresh.
type Gate struct{ m *daemonctl.GateManager }

// NewGate returns the gate lifecycle of cfg, using the real systemctl.
func NewGate(cfg config.Config, opts Options) *Gate {
	m := daemonctl.NewGateManager(cfg.Clone(), opts.env(), opts.Log)
	m.FindBinary = opts.findBinary()
	return &Gate{m: m}
}

// GateStatus is what `gate status --json` prints.
type GateStatus struct {
	Mode    Mode `json:"mode"`
	Running bool `json:"running"`
	Port    int  `json:"port"`
}

// Status reports how the gate runs: systemd socket active, our daemon
// alive, or neither.
func (g *Gate) Status(ctx context.Context) GateStatus {
	st := g.m.Status(ctx)
	return GateStatus{Mode: Mode(st.Mode), Running: st.Running, Port: st.Port}
}

// Ensure is nil when the gate can serve a new task: running, and in
// systemd mode with current units for this configuration's base path.
// Otherwise a Message says what to run. It never starts the gate.
func (g *Gate) Ensure(ctx context.Context) error { return g.m.EnsureReachable(ctx) }

// GateStart says how Start runs the gate.
type GateStart struct {
	// Port is the gate's TCP port; 0 means the configuration's gate_port.
	Port int
	// Daemon forces a detached daemon even where systemd user units could
	// be installed.
	Daemon bool
}

// Start installs and starts the systemd units where systemd user services
// are usable (never as root), else starts the detached daemon; it returns
// the mode used.
func (g *Gate) Start(ctx context.Context, opts GateStart) (Mode, error) {
	mode, err := g.m.Start(ctx, g.port(opts.Port), opts.Daemon)
	return Mode(mode), err
}

func (g *Gate) port(p int) int {
	if p == 0 {
		return g.m.Cfg.GatePort
	}
	return p
}

// Stop stops our detached daemon (identity-checked through /proc, never a
// stranger's PID) and waits briefly for it to go; it reports whether one
// was signalled. Installed units are left alone: Uninstall removes them.
func (g *Gate) Stop() bool { return g.m.StopDaemon() }

// Install writes the socket and service units for port (0 = gate_port),
// reloads systemd, enables and restarts the socket. Without systemd user
// services it returns ErrNoSystemd.
func (g *Gate) Install(ctx context.Context, port int) error {
	return g.m.Install(ctx, g.port(port))
}

// Uninstall disables the socket and removes the gate's unit files,
// those of older versions included; without systemd user services it
// returns ErrNoSystemdUninstall.
func (g *Gate) Uninstall(ctx context.Context) error { return g.m.Uninstall(ctx) }

// UnitsOutdated is the warning `gate status` prints for installed units
// older than GateUnitVersion or baked with another base path; "" when
// there is nothing to say (or no units).
func (g *Gate) UnitsOutdated() string { return g.m.CheckUnitsOutdated() }

// SystemdUsable reports whether Start would install systemd user units:
// the user manager answers and user units may be installed here (never as
// root, never outside the home directory).
func (g *Gate) SystemdUsable(ctx context.Context) bool { return g.m.SystemdUsable(ctx) }

// SocketInstalled reports whether the gate's socket unit is in the user
// unit directory (active or not).
func (g *Gate) SocketInstalled() bool { return g.m.SocketInstalled() }

// DaemonPID is the PID of our detached gate daemon, if one runs (its PID
// file, identity-checked through /proc).
func (g *Gate) DaemonPID() (int, bool) { return g.m.DaemonPID() }
