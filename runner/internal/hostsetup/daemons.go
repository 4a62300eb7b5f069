package hostsetup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"terok.dev/sandbox/common/atomicfile"
	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/runner/internal/daemonctl"
	"terok.dev/sandbox/systemd"
)

// Daemon is one host daemon as setup and uninstall see it.
type Daemon interface {
	Name() string
	// Plan and Apply install (units) or start (PID-file daemon) it.
	Plan(ctx context.Context) ([]string, error)
	Apply(ctx context.Context) error
	// RemovePlan and Remove undo Plan and Apply.
	RemovePlan(ctx context.Context) ([]string, error)
	Remove(ctx context.Context) error
}

// unitDaemon is a daemon run by systemd units (socket activation) in dir,
// through its lifecycle m, whose Systemd is the manager that runs the units
// and whose FindBinary finds the binary as a unit's ExecStart must
// (findForUnit): installed when its unit files differ from the rendered
// ones or its socket is not active.
type unitDaemon struct {
	name string
	m    daemonctl.Manager
	dir  string
	// prepare creates what the daemon needs before it can start (nil =
	// nothing); socketFile is the Unix socket a stopped socket unit leaves
	// behind, removed with the units ("" = none).
	prepare    func() error
	socketFile string
}

func (u unitDaemon) Name() string { return u.name }

func (u unitDaemon) port() int { return u.m.Daemon.Port(u.m.Cfg) }

// names are every unit file that belongs to it (old ones too).
func (u unitDaemon) names() []string { return u.m.Daemon.UnitNames() }

func (u unitDaemon) Plan(ctx context.Context) ([]string, error) {
	units, err := u.m.Units(u.port())
	if err != nil {
		return nil, err
	}
	var changes []string
	for _, un := range units {
		p := filepath.Join(u.dir, un.Name)
		have, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(have, []byte(un.Content)) {
			changes = append(changes, "write unit "+p)
		}
	}
	if socket := u.m.Daemon.SocketUnit; len(changes) > 0 || !u.m.Systemd.IsActive(ctx, socket) {
		changes = append(changes, "enable and start "+socket)
	}
	return changes, nil
}

func (u unitDaemon) Apply(ctx context.Context) error {
	return u.m.InstallUnits(ctx, u.dir, u.port(), u.prepare)
}

// Dirs are the directories Apply writes into.
func (u unitDaemon) Dirs() []string { return []string{u.dir} }

func (u unitDaemon) RemovePlan(context.Context) ([]string, error) {
	var changes []string
	for _, n := range u.names() {
		p := filepath.Join(u.dir, n)
		if _, err := os.Lstat(p); err == nil {
			changes = append(changes, "remove unit "+p)
		}
	}
	if len(changes) > 0 {
		changes = append([]string{"disable and stop " + u.m.Daemon.SocketUnit}, changes...)
	}
	return changes, nil
}

// Remove uninstalls the units; without a manager to tell, no socket can be
// running, so removing the files is the whole job.
func (u unitDaemon) Remove(ctx context.Context) error {
	var err error
	if u.m.Systemd.Available(ctx) {
		err = u.m.UninstallUnits(ctx, u.dir)
	} else {
		err = removeUnitFiles(u.dir, u.names())
	}
	if err != nil || u.socketFile == "" {
		return err
	}
	return removeSocketFile(u.socketFile)
}

// pidDaemon is a detached daemon tracked by its PID file, for hosts where
// systemd user units cannot be used (root, no user manager): started when
// our process is not running. It does not survive a reboot; the next setup
// (or `gate start` / `proxy start`) starts it again.
type pidDaemon struct {
	name    string
	pidFile string
	running func() (int, bool)
	start   func(ctx context.Context) error
	stop    func() bool
}

func (p pidDaemon) Name() string { return p.name }

func (p pidDaemon) Plan(context.Context) ([]string, error) {
	if _, ok := p.running(); ok {
		return nil, nil
	}
	return []string{"start the daemon (PID file " + p.pidFile + ")"}, nil
}

func (p pidDaemon) Apply(ctx context.Context) error { return p.start(ctx) }

func (p pidDaemon) RemovePlan(context.Context) ([]string, error) {
	if pid, ok := p.running(); ok {
		return []string{fmt.Sprintf("stop the daemon (PID %d)", pid)}, nil
	}
	return nil, nil
}

func (p pidDaemon) Remove(context.Context) error {
	if !p.stop() {
		return errors.New("the daemon did not stop")
	}
	return nil
}

// DaemonManagers are the managers of the gate and the credential proxy
// (which also serves the SSH agent port), built once so tests substitute
// systemctl and the binaries.
type DaemonManagers struct {
	Gate  *daemonctl.GateManager
	Proxy *daemonctl.ProxyManager
	// System is root's systemd manager and SystemUnitDir where root's
	// units go (the system scope's socket units).
	System        daemonctl.Systemd
	SystemUnitDir string
	// PrivateTmpDirs are the directories a hardened unit cannot see
	// (PrivateTmp=): a daemon there is refused for units.
	PrivateTmpDirs []string
}

// SystemUnitDir is where setup --system writes root's units: the
// administrator's unit directory, which wins over the packaged units in
// /lib/systemd/system (docs/install.md).
const SystemUnitDir = "/etc/systemd/system"

// NewDaemonManagers uses the real systemctl and binaries.
func NewDaemonManagers(cfg config.Config, env config.Env, log *slog.Logger) DaemonManagers {
	return DaemonManagers{Gate: daemonctl.NewGateManager(cfg, env, log), Proxy: daemonctl.NewProxyManager(cfg, env, log),
		System: daemonctl.Systemd{System: true}, SystemUnitDir: SystemUnitDir,
		PrivateTmpDirs: []string{"/tmp", "/var/tmp"}}
}

func find(f func(string) (string, error), name string) (string, error) {
	if f != nil {
		return f(name)
	}
	return daemonctl.FindBinary(name)
}

// findForUnit is find for a unit's ExecStart: the hardened services run
// with PrivateTmp=, which hides /tmp and /var/tmp, so a daemon there would
// fail on its first connection while setup reported success (found under
// a real systemd).
func (m DaemonManagers) findForUnit(f func(string) (string, error), name string) (string, error) {
	bin, err := find(f, name)
	if err != nil {
		return "", err
	}
	for _, tmp := range m.PrivateTmpDirs {
		if isWithin(bin, tmp) {
			return "", fmt.Errorf("%s is in %s, which the hardened unit cannot see (PrivateTmp=); install the binaries (make install) and run the setup again", bin, tmp)
		}
	}
	return bin, nil
}

// Daemons chooses, as the per-component commands do, systemd user units
// where a user manager answers and the scope is a user's, else PID-file
// daemons.
func (m DaemonManagers) Daemons(ctx context.Context, scope Scope) []Daemon {
	if scope == ScopeUser && m.Gate.SystemdUsable(ctx) {
		if dir, err := daemonctl.UserUnitDir(m.Gate.Env); err == nil {
			return m.unitDaemons(dir)
		}
	}
	if scope == ScopeSystem && m.SystemUnitDir != "" && m.System.Available(ctx) {
		return m.systemUnitDaemons()
	}
	return m.pidDaemons()
}

// RemovalDaemons is every form a daemon may have been set up in (units
// and PID-file daemons both), so uninstall undoes whichever is there.
func (m DaemonManagers) RemovalDaemons(_ context.Context, scope Scope) []Daemon {
	var out []Daemon
	if scope == ScopeUser {
		if dir, err := daemonctl.UserUnitDir(m.Gate.Env); err == nil {
			out = m.unitDaemons(dir)
		}
	}
	if scope == ScopeSystem && m.SystemUnitDir != "" {
		out = m.systemUnitDaemons()
	}
	return append(out, m.pidDaemons()...)
}

// unitsOf is mg's lifecycle as units in dir run by sd, its binary found
// as a unit's ExecStart must be (findForUnit).
func (m DaemonManagers) unitsOf(name string, mg daemonctl.Manager, sd daemonctl.SystemdControl, dir string,
	prepare func() error, socketFile string) unitDaemon {
	find := mg.FindBinary
	mg.Systemd = sd
	mg.FindBinary = func(name string) (string, error) { return m.findForUnit(find, name) }
	return unitDaemon{name: name, m: mg, dir: dir, prepare: prepare, socketFile: socketFile}
}

// unitDaemons are the gate's and the credential proxy's user units in dir,
// run by the user's systemd.
func (m DaemonManagers) unitDaemons(dir string) []Daemon {
	g, p := m.Gate, m.Proxy
	return []Daemon{
		m.unitsOf("gate units", g.Manager, g.Systemd, dir, g.PrepareFiles, ""),
		m.unitsOf("credential proxy units", p.Manager, p.Systemd, dir, p.PrepareFiles, p.Cfg.ProxySocket()),
	}
}

// systemUnitDaemons are root's gate and credential proxy socket units,
// rendered from the same templates as the user units (the proxy serves
// the SSH agent port itself, so the standalone agent's units are not
// needed), run by root's systemd.
func (m DaemonManagers) systemUnitDaemons() []Daemon {
	g, p := m.Gate, m.Proxy
	return []Daemon{
		m.unitsOf("gate system units", g.Manager, m.System, m.SystemUnitDir, g.PrepareFiles, ""),
		// The proxy refuses to start without these (as `proxy install`
		// creates them for the user units).
		m.unitsOf("credential proxy system units", p.Manager, m.System, m.SystemUnitDir, func() error {
			for _, f := range []string{p.Cfg.RoutesFile(), p.Cfg.SSHKeysJSON()} {
				if err := atomicfile.CreateIfMissing(f, []byte("{}\n"), 0o600); err != nil {
					return fmt.Errorf("create %s: %w", f, err)
				}
			}
			return nil
		}, p.Cfg.ProxySocket()),
	}
}

// removeUnitFiles is the uninstall without a user manager to tell: no
// socket can be running then, so removing the files is the whole job.
func removeUnitFiles(dir string, names []string) error {
	for _, n := range names {
		if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove unit %s: %w", n, err)
		}
	}
	return nil
}

func (m DaemonManagers) pidDaemons() []Daemon {
	g, p := m.Gate, m.Proxy
	return []Daemon{
		pidDaemon{name: "gate daemon", pidFile: g.Cfg.GatePIDFile(), running: g.DaemonPID,
			start: func(ctx context.Context) error { return g.StartDaemon(ctx, g.Cfg.GatePort) }, stop: g.StopDaemon},
		pidDaemon{name: "credential proxy daemon", pidFile: p.Cfg.ProxyPIDFile(), running: p.DaemonPID,
			start: p.StartDaemon, stop: p.StopDaemon},
	}
}

// WaitServices is what setup does between the daemons and doctor: the
// credential proxy's socket unit listens on the proxy port only, and the
// SSH agent port opens when the service runs, so a socket-activated proxy
// is started (as `proxy ensure` does) and both ports are given the
// manager's usual 5 s to answer. It reports what did not come up; doctor
// then judges.
func (m DaemonManagers) WaitServices(ctx context.Context, scope Scope) []string {
	p := m.Proxy
	var sd interface {
		IsActive(ctx context.Context, unit string) bool
		Call(ctx context.Context, args ...string) error
	}
	switch {
	case scope == ScopeUser:
		sd = p.Systemd
	case m.SystemUnitDir != "":
		sd = m.System
	}
	var problems []string
	if sd != nil && sd.IsActive(ctx, systemd.ProxySocketName) {
		if err := sd.Call(ctx, "start", systemd.ProxyServiceName); err != nil {
			problems = append(problems, err.Error())
		}
	}
	for _, port := range []int{p.Cfg.ProxyPort, p.Cfg.SSHAgentPort} {
		if !daemonctl.WaitPort(ctx, port) {
			problems = append(problems, fmt.Sprintf("nothing answers on 127.0.0.1:%d", port))
		}
	}
	return problems
}

// removeSocketFile removes the Unix socket a stopped socket unit leaves
// behind (systemd keeps it: RemoveOnStop= is off), and nothing else.
func removeSocketFile(path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Mode()&os.ModeSocket == 0 {
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}
