// Package gatectl is the runner side of the gate's lifecycle
// (docs/gate.md, Operating it): systemd user units with a version stamp and a
// baked base path, or a detached daemon tracked by a PID file whose owner is
// checked through /proc before it is trusted or signalled.
package gatectl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/runner/internal/daemonctl"
	"terok.dev/sandbox/systemd"
)

// Names and environment variables.
const (
	Binary        = daemonctl.GateBinary
	EnvAdminToken = "TEROK_GATE_ADMIN_TOKEN"
	EnvBind       = "TEROK_GATE_BIND"
	UnitVersion   = systemd.GateUnitVersion
	startTimeout  = 10 * time.Second
	stopWait      = 10 * time.Second
)

// Status is what `gate status` reports (docs/gate.md, Operating it); Mode
// is one of daemonctl.ModeSystemd, daemonctl.ModeDaemon, daemonctl.ModeNone.
type Status struct {
	Mode    string `json:"mode"`
	Running bool   `json:"running"`
	Port    int    `json:"port"`
}

// Manager manages the gate of one configuration. Every path comes from Cfg.
type Manager struct{ daemonctl.Base }

// New returns a manager using the real systemctl.
func New(cfg config.Config, env config.Env, log *slog.Logger) *Manager {
	return &Manager{daemonctl.NewBase(cfg, env, log)}
}

// inst is the gate of this configuration as daemonctl describes it.
func (m *Manager) inst() daemonctl.Instance { return m.Instance(daemonctl.Gate(), m.Cfg.GatePIDFile()) }

func (m *Manager) find() (string, error) { return m.inst().Find() }

// SocketInstalled: terok-gate.socket exists in the unit directory.
func (m *Manager) SocketInstalled() bool { return m.inst().SocketInstalled() }

// DaemonPID returns the PID of our running daemon, if any (docs/gate.md, Operating it).
func (m *Manager) DaemonPID() (int, bool) { return m.inst().DaemonPID() }

// Status is the `gate status` table (docs/gate.md, Operating it).
func (m *Manager) Status(ctx context.Context) Status {
	st := Status{Mode: daemonctl.ModeNone, Port: m.Cfg.GatePort}
	installed := m.SocketInstalled()
	if installed && m.Systemd.IsActive(ctx, systemd.GateSocketName) {
		st.Mode, st.Running = daemonctl.ModeSystemd, true
		return st
	}
	if _, ok := m.DaemonPID(); ok {
		st.Mode, st.Running = daemonctl.ModeDaemon, true
		return st
	}
	if installed {
		st.Mode = daemonctl.ModeSystemd
	}
	return st
}

// RenderUnits renders the socket and service for port (the explicit
// override or gate_port: honoured in systemd mode as in daemon mode).
func (m *Manager) RenderUnits(bin string, port int) ([]daemonctl.Unit, error) {
	if err := daemonctl.CheckPort("gate", port); err != nil {
		return nil, err
	}
	vals := map[string]string{
		"UNIT_VERSION":   strconv.Itoa(UnitVersion),
		"PORT":           strconv.Itoa(port),
		"TEROK_GATE_BIN": bin,
		"GATE_BASE_PATH": m.Cfg.GateBasePath(),
		"TOKEN_FILE":     m.Cfg.GateTokenFile(),
		// Its audit records (docs/audit.md, Files, rotation, modes); audit =
		// false in config.toml needs the units rendered again.
		"AUDIT_DIR":  m.Cfg.AuditDir(),
		"AUDIT_FILE": m.AuditArg(),
	}
	var units []daemonctl.Unit
	for _, u := range []struct{ name, tmpl string }{
		{systemd.GateSocketName, systemd.GateSocket},
		{systemd.GateServiceName, systemd.GateService},
	} {
		out, err := daemonctl.Render(u.tmpl, vals)
		if err != nil {
			return nil, fmt.Errorf("render %s: %w", u.name, err)
		}
		units = append(units, daemonctl.Unit{Name: u.name, Content: out})
	}
	return units, nil
}

// Install is `gate install` (docs/gate.md, Operating it): render and write both units, reload, enable and restart
// the socket.
func (m *Manager) Install(ctx context.Context, port int) error {
	bin, err := m.find()
	if err != nil {
		return err
	}
	dir, err := daemonctl.UserUnitDir(m.Env)
	if err != nil {
		return err
	}
	units, err := m.RenderUnits(bin, port)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(m.Cfg.GateBasePath(), 0o700); err != nil {
		return fmt.Errorf("create gate base path: %w", err)
	}
	// An upgrade from v6: its per-connection template must not stay
	// behind next to the long-lived service (systemd would keep both).
	if err := os.Remove(filepath.Join(dir, systemd.LegacyGateServiceName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove the v6 unit %s: %w", systemd.LegacyGateServiceName, err)
	}
	return m.Systemd.Install(ctx, dir, units, systemd.GateSocketName)
}

// Uninstall is `gate uninstall` (docs/gate.md, Operating it).
func (m *Manager) Uninstall(ctx context.Context) error {
	dir, err := daemonctl.UserUnitDir(m.Env)
	if err != nil {
		return err
	}
	return m.Systemd.Uninstall(ctx, dir, daemonctl.Gate().UnitNames(), systemd.GateSocketName)
}

// AuditArg is the gate's --audit-file value (docs/audit.md, Files, rotation, modes).
func (m *Manager) AuditArg() string { return m.Base.AuditArg("gate") }

// DaemonArgs is the daemon command line (docs/gate.md, Operating it). The admin token is never
// on it; it reaches the daemon through the inherited environment only.
func (m *Manager) DaemonArgs(port int) []string {
	args := []string{
		"--base-path=" + m.Cfg.GateBasePath(),
		"--token-file=" + m.Cfg.GateTokenFile(),
		"--port=" + strconv.Itoa(port),
		"--detach",
		"--pid-file=" + m.Cfg.GatePIDFile(),
		"--audit-file=" + m.AuditArg(),
	}
	if b := m.Getenv(EnvBind); b != "" {
		args = append(args, "--bind="+b)
	}
	return args
}

// StartDaemon starts the detached daemon on port.
func (m *Manager) StartDaemon(ctx context.Context, port int) error {
	if err := daemonctl.CheckPort("gate", port); err != nil {
		return err
	}
	if pid, ok := m.DaemonPID(); ok {
		return fmt.Errorf("gate daemon already running (PID %d); stop it first with 'terok-sandbox gate stop'", pid)
	}
	bin, err := m.find()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(m.Cfg.GateBasePath(), 0o700); err != nil {
		return fmt.Errorf("create gate base path: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(m.Cfg.GatePIDFile()), 0o700); err != nil {
		return fmt.Errorf("create PID file directory: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, m.DaemonArgs(port)...)
	cmd.Env = m.daemonEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(out.String())
		if ctx.Err() != nil {
			msg = "timed out after " + startTimeout.String()
		}
		return fmt.Errorf("start gate daemon: %v: %s", err, msg)
	}
	return nil
}

// daemonEnv is the runner's environment (it carries TEROK_GATE_ADMIN_TOKEN
// when the operator set it) when Env reads the real process, else built
// from Env for the variables the gate and git need.
func (m *Manager) daemonEnv() []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "GIT_EXEC_PATH", "LANG", "TZ", EnvAdminToken} {
		if v := m.Getenv(k); v != "" {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// StopDaemon sends SIGTERM to our daemon (identity-checked), removes the
// PID file and waits a little for the process to go.
func (m *Manager) StopDaemon() bool {
	pid, ok := m.DaemonPID()
	stopped := m.inst().StopDaemon()
	if ok && stopped {
		deadline := time.Now().Add(stopWait)
		for time.Now().Before(deadline) && daemonctl.Alive(pid) {
			time.Sleep(25 * time.Millisecond)
		}
	}
	return stopped
}

// Start is `gate start` (docs/gate.md, Operating it). It reports which mode was used.
func (m *Manager) Start(ctx context.Context, port int, forceDaemon bool) (string, error) {
	if !forceDaemon && m.SystemdUsable(ctx) {
		return daemonctl.ModeSystemd, m.Install(ctx, port)
	}
	return daemonctl.ModeDaemon, m.StartDaemon(ctx, port)
}

// InstalledVersion is the stamp of the installed socket unit
// (daemonctl.StampMissing / StampUnversioned or the number).
func (m *Manager) InstalledVersion() int { return m.inst().InstalledVersion() }

// InstalledBasePath is the --base-path baked into the installed service,
// or "" when unknown.
func (m *Manager) InstalledBasePath() string {
	p := m.inst().UnitPath(systemd.GateServiceName)
	if p == "" {
		return ""
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return ParseBasePath(string(data))
}

// ParseBasePath finds the first ExecStart= line with --base-path= and
// returns that argument's value.
func ParseBasePath(unit string) string {
	for _, line := range strings.Split(unit, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "ExecStart=") || !strings.Contains(line, "--base-path=") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "--base-path="); ok {
				return v
			}
		}
	}
	return ""
}

// Outdated reports whether installed (a stamp) is older than UnitVersion.
func Outdated(installed int) bool { return daemonctl.Gate().Outdated(installed) }

// Divergence returns the base-path message (docs/gate.md, Operating it) when the installed base path and the
// configured one differ after resolving symlinks, else "".
func (m *Manager) Divergence() string {
	inst := m.InstalledBasePath()
	if inst == "" {
		return ""
	}
	want := m.Cfg.GateBasePath()
	if resolve(inst) == resolve(want) {
		return ""
	}
	return fmt.Sprintf("Installed gate base path diverges from current config.\n  Installed: %s\n  Expected:  %s", inst, want)
}

func resolve(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return filepath.Clean(p)
}

// CheckUnitsOutdated is the outdated-unit warning of `gate status`
// (docs/gate.md, Operating it; "" = nothing to say).
func (m *Manager) CheckUnitsOutdated() string {
	if !m.SocketInstalled() {
		return ""
	}
	if w := m.inst().OutdatedWarning(); w != "" {
		return w
	}
	return m.Divergence()
}

// EnsureReachable is `gate ensure` (docs/gate.md, Operating it): nil when the gate can serve a new task.
func (m *Manager) EnsureReachable(ctx context.Context) error {
	st := m.Status(ctx)
	if st.Running {
		if st.Mode == daemonctl.ModeSystemd {
			if v := m.InstalledVersion(); Outdated(v) {
				return daemonctl.Messagef("Gate server systemd units are outdated (installed %s, expected v%d).\nRun 'terok-sandbox gate start' to update them.",
					daemonctl.DescribeVersion(v), UnitVersion)
			}
			if d := m.Divergence(); d != "" {
				return daemonctl.Messagef("%s\nRun 'terok-sandbox gate start' to reinstall the units for the current configuration.", d)
			}
		}
		return nil
	}
	hint := "Start the gate daemon.\n  terok-sandbox gate start --daemon"
	if m.SystemdUsable(ctx) {
		hint = "Recommended: install and start the systemd socket.\n  terok-sandbox gate start"
	}
	return daemonctl.Messagef("Gate server is not running.\nThe gate serves the task's git repository to the container over the network (port %d); without it the task cannot clone or push.\n%s",
		m.Cfg.GatePort, hint)
}
