package daemons

import (
	"context"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/runner/internal/daemonctl"
)

// Proxy manages the credential proxy (and with it the SSH agent) of one
// configuration. It holds no state of its own.
type Proxy struct{ m *daemonctl.ProxyManager }

// NewProxy returns the proxy lifecycle of cfg, using the real systemctl.
func NewProxy(cfg config.Config, opts Options) *Proxy {
	m := daemonctl.NewProxyManager(cfg.Clone(), opts.env(), opts.Log)
	m.FindBinary = opts.findBinary()
	return &Proxy{m: m}
}

// ProxyStatus is what `proxy status --json` prints; Mode is one of the
// Mode constants as a string, Warning is UnitsOutdated's.
type ProxyStatus = daemonctl.ProxyStatus

// Status reports how the proxy runs, whether it answers its health probe,
// and what it serves (routes, providers of the default credential set).
func (p *Proxy) Status(ctx context.Context) ProxyStatus { return p.m.Status(ctx) }

// Ensure is nil when the proxy and its SSH agent port are reachable; in
// systemd mode it starts the service so both ports come up. It never
// starts a daemon; a Message says what to run.
func (p *Proxy) Ensure(ctx context.Context) error { return p.m.EnsureReachable(ctx) }

// ProxyStart says how Start runs the proxy.
type ProxyStart struct {
	// LogLevel of the daemon's log file ("" = INFO).
	LogLevel string
}

// Start launches the detached daemon in its own session and waits up to
// 5 s for its health probe; a daemon that exits early is reported with
// its stderr. For socket activation use Install.
func (p *Proxy) Start(ctx context.Context, opts ProxyStart) error {
	m := *p.m
	m.LogLevel = opts.LogLevel
	return m.StartDaemon(ctx)
}

// Stop stops our detached daemon (identity-checked through /proc, never a
// stranger's PID) and waits up to 10 s for it to go; it reports whether
// one was signalled. Installed units are left alone: Uninstall removes
// them.
func (p *Proxy) Stop() bool { return p.m.StopDaemon() }

// Install writes the socket and service units and enables the socket; the
// routes file and ssh-keys.json are created empty when missing. Without
// systemd user services it returns ErrNoSystemd.
func (p *Proxy) Install(ctx context.Context) error { return p.m.Install(ctx) }

// Uninstall disables the socket and removes both units; without systemd
// user services it returns ErrNoSystemdUninstall.
func (p *Proxy) Uninstall(ctx context.Context) error { return p.m.Uninstall(ctx) }

// UnitsOutdated is the warning for installed units older than
// ProxyUnitVersion, or "".
func (p *Proxy) UnitsOutdated() string { return p.m.CheckUnitsOutdated() }

// SystemdUsable reports whether Install can work: the user manager answers
// and user units may be installed here (never as root, never outside the
// home directory).
func (p *Proxy) SystemdUsable(ctx context.Context) bool { return p.m.SystemdUsable(ctx) }

// SocketInstalled reports whether the proxy's socket unit is in the user
// unit directory (active or not).
func (p *Proxy) SocketInstalled() bool { return p.m.SocketInstalled() }

// SocketActive reports whether the proxy's socket unit is active (systemd
// listens for it).
func (p *Proxy) SocketActive(ctx context.Context) bool { return p.m.SocketActive(ctx) }

// ServiceActive reports whether the proxy's service unit is active (the
// proxy itself runs and its TCP ports are bound); it does not trigger
// socket activation.
func (p *Proxy) ServiceActive(ctx context.Context) bool { return p.m.ServiceActive(ctx) }

// DaemonPID is the PID of our detached proxy daemon, if one runs (its PID
// file, identity-checked through /proc).
func (p *Proxy) DaemonPID() (int, bool) { return p.m.DaemonPID() }
