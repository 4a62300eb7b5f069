package daemonctl

// The gate's lifecycle (docs/gate.md, Operating it): systemd user units with
// a version stamp and a baked base path, or a detached daemon tracked by a
// PID file whose owner is checked through /proc before it is trusted or
// signalled.

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"terok.dev/sandbox/common/config"
)

// The gate's environment variables and timings.
const (
	EnvGateAdminToken = "TEROK_GATE_ADMIN_TOKEN"
	EnvGateBind       = "TEROK_GATE_BIND"
	gateStartTimeout  = 10 * time.Second
)

// GateStatus is what `gate status` reports (docs/gate.md, Operating it);
// Mode is one of ModeSystemd, ModeDaemon, ModeNone.
type GateStatus struct {
	Mode    string `json:"mode"`
	Running bool   `json:"running"`
	Port    int    `json:"port"`
}

// GateManager manages the gate of one configuration: the shared Manager
// with Gate() as its data, plus the gate's status, start and checks. Every
// path comes from Cfg.
type GateManager struct{ Manager }

// NewGateManager returns the gate's manager using the real systemctl.
func NewGateManager(cfg config.Config, env config.Env, log *slog.Logger) *GateManager {
	return &GateManager{NewManager(Gate(), cfg, env, log)}
}

// Status is the `gate status` table (docs/gate.md, Operating it).
func (m *GateManager) Status(ctx context.Context) GateStatus {
	st := GateStatus{Mode: ModeNone, Port: m.Cfg.GatePort}
	installed := m.SocketInstalled()
	if installed && m.Systemd.IsActive(ctx, m.Daemon.SocketUnit) {
		st.Mode, st.Running = ModeSystemd, true
		return st
	}
	if _, ok := m.DaemonPID(); ok {
		st.Mode, st.Running = ModeDaemon, true
		return st
	}
	if installed {
		st.Mode = ModeSystemd
	}
	return st
}

// Install is `gate install` (docs/gate.md, Operating it): render and write
// both units for port, reload, enable and restart the socket. Without
// systemd user services it returns ErrNoSystemd.
func (m *GateManager) Install(ctx context.Context, port int) error {
	if _, err := UserUnitDir(m.Env); err != nil {
		return err
	}
	if !m.Systemd.Available(ctx) {
		return ErrNoSystemd
	}
	return m.installUnits(ctx, port)
}

// installUnits is Install once systemd user services are known usable.
func (m *GateManager) installUnits(ctx context.Context, port int) error {
	dir, err := UserUnitDir(m.Env)
	if err != nil {
		return err
	}
	return m.InstallUnits(ctx, dir, port, m.PrepareFiles)
}

// PrepareFiles creates what the gate needs to start: its base path.
func (m *GateManager) PrepareFiles() error {
	if err := os.MkdirAll(m.Cfg.GateBasePath(), 0o700); err != nil {
		return fmt.Errorf("create gate base path: %w", err)
	}
	return nil
}

// Uninstall is `gate uninstall` (docs/gate.md, Operating it); without
// systemd user services it returns ErrNoSystemdUninstall.
func (m *GateManager) Uninstall(ctx context.Context) error {
	dir, err := UserUnitDir(m.Env)
	if err != nil {
		return err
	}
	if !m.Systemd.Available(ctx) {
		return ErrNoSystemdUninstall
	}
	return m.UninstallUnits(ctx, dir)
}

// DaemonArgs is the daemon command line (docs/gate.md, Operating it). The admin token is never
// on it; it reaches the daemon through the inherited environment only.
func (m *GateManager) DaemonArgs(port int) []string {
	args := []string{
		"--base-path=" + m.Cfg.GateBasePath(),
		"--token-file=" + m.Cfg.GateTokenFile(),
		"--port=" + strconv.Itoa(port),
		"--detach",
		"--pid-file=" + m.Cfg.GatePIDFile(),
		"--audit-file=" + m.AuditArg(),
	}
	if b := m.Getenv(EnvGateBind); b != "" {
		args = append(args, "--bind="+b)
	}
	return args
}

// StartDaemon starts the detached daemon on port.
func (m *GateManager) StartDaemon(ctx context.Context, port int) error {
	if err := CheckPort("gate", port); err != nil {
		return err
	}
	if pid, ok := m.DaemonPID(); ok {
		return fmt.Errorf("gate daemon already running (PID %d); stop it first with 'terok-sandbox gate stop'", pid)
	}
	bin, err := m.Find()
	if err != nil {
		return err
	}
	if err := m.PrepareFiles(); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(m.Cfg.GatePIDFile()), 0o700); err != nil {
		return fmt.Errorf("create PID file directory: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, gateStartTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, m.DaemonArgs(port)...)
	cmd.Env = m.daemonEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(out.String())
		if ctx.Err() != nil {
			msg = "timed out after " + gateStartTimeout.String()
		}
		return fmt.Errorf("start gate daemon: %v: %s", err, msg)
	}
	return nil
}

// daemonEnv is the runner's environment (it carries TEROK_GATE_ADMIN_TOKEN
// when the operator set it) when Env reads the real process, else built
// from Env for the variables the gate and git need.
func (m *GateManager) daemonEnv() []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "GIT_EXEC_PATH", "LANG", "TZ", EnvGateAdminToken} {
		if v := m.Getenv(k); v != "" {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// Start is `gate start` (docs/gate.md, Operating it). It reports which mode was used.
func (m *GateManager) Start(ctx context.Context, port int, forceDaemon bool) (string, error) {
	if !forceDaemon && m.SystemdUsable(ctx) {
		return ModeSystemd, m.installUnits(ctx, port)
	}
	return ModeDaemon, m.StartDaemon(ctx, port)
}

// InstalledBasePath is the --base-path baked into the installed service,
// or "" when unknown.
func (m *GateManager) InstalledBasePath() string {
	p := m.Instance().UnitPath(m.Daemon.ServiceUnit)
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

// Divergence returns the base-path message (docs/gate.md, Operating it) when the installed base path and the
// configured one differ after resolving symlinks, else "".
func (m *GateManager) Divergence() string {
	inst := m.InstalledBasePath()
	if inst == "" {
		return ""
	}
	want := m.Cfg.GateBasePath()
	if resolvePath(inst) == resolvePath(want) {
		return ""
	}
	return fmt.Sprintf("Installed gate base path diverges from current config.\n  Installed: %s\n  Expected:  %s", inst, want)
}

func resolvePath(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return filepath.Clean(p)
}

// CheckUnitsOutdated is the outdated-unit warning of `gate status`
// (docs/gate.md, Operating it; "" = nothing to say).
func (m *GateManager) CheckUnitsOutdated() string {
	if !m.SocketInstalled() {
		return ""
	}
	if w := m.Instance().OutdatedWarning(); w != "" {
		return w
	}
	return m.Divergence()
}

// EnsureReachable is `gate ensure` (docs/gate.md, Operating it): nil when the gate can serve a new task.
func (m *GateManager) EnsureReachable(ctx context.Context) error {
	st := m.Status(ctx)
	if st.Running {
		if st.Mode == ModeSystemd {
			if v := m.InstalledVersion(); m.Outdated(v) {
				return Messagef("Gate server systemd units are outdated (installed %s, expected v%d).\nRun 'terok-sandbox gate start' to update them.",
					DescribeVersion(v), m.Daemon.UnitVersion)
			}
			if d := m.Divergence(); d != "" {
				return Messagef("%s\nRun 'terok-sandbox gate start' to reinstall the units for the current configuration.", d)
			}
		}
		return nil
	}
	hint := "Start the gate daemon.\n  terok-sandbox gate start --daemon"
	if m.SystemdUsable(ctx) {
		hint = "Recommended: install and start the systemd socket.\n  terok-sandbox gate start"
	}
	return Messagef("Gate server is not running.\nThe gate serves the task's git repository to the container over the network (port %d); without it the task cannot clone or push.\n%s",
		m.Cfg.GatePort, hint)
}
