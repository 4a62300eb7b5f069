// Package proxyctl is the runner side of the credential proxy's lifecycle
// (docs/credential-proxy.md, Operating it): systemd user units (socket activation,
// unit version 4) or a detached daemon tracked by a PID file whose owner is
// checked through /proc, plus the probes and the status object.
package proxyctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"terok.dev/sandbox/common/atomicfile"
	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/runner/internal/daemonctl"
	"terok.dev/sandbox/systemd"
)

// Names and timings (docs/credential-proxy.md, Operating it).
const (
	Binary       = daemonctl.ProxyBinary
	UnitVersion  = systemd.ProxyUnitVersion
	SocketUnit   = systemd.ProxySocketName
	ServiceUnit  = systemd.ProxyServiceName
	probeTimeout = 2 * time.Second
)

// Status is what `proxy status` reports (docs/credential-proxy.md, Operating
// it); Mode is one of daemonctl.ModeSystemd, daemonctl.ModeDaemon, daemonctl.ModeNone.
type Status struct {
	Mode              string   `json:"mode"`
	Running           bool     `json:"running"`
	Healthy           bool     `json:"healthy"`
	SocketPath        string   `json:"socket_path"`
	DBPath            string   `json:"db_path"`
	RoutesPath        string   `json:"routes_path"`
	RoutesConfigured  int      `json:"routes_configured"`
	CredentialsStored []string `json:"credentials_stored"`
	// Warning is set when the installed units are older than UnitVersion.
	Warning string `json:"warning,omitempty"`
}

// Manager manages the credential proxy of one configuration; every path
// comes from Cfg.
type Manager struct {
	daemonctl.Base
	// LogLevel of a started daemon ("" = INFO).
	LogLevel string
}

// New returns a manager using the real systemctl.
func New(cfg config.Config, env config.Env, log *slog.Logger) *Manager {
	return &Manager{Base: daemonctl.NewBase(cfg, env, log)}
}

// inst is the proxy of this configuration as daemonctl describes it.
func (m *Manager) inst() daemonctl.Instance {
	return m.Instance(daemonctl.Proxy(), m.Cfg.ProxyPIDFile())
}

func (m *Manager) find() (string, error) { return m.inst().Find() }

// SocketInstalled: the socket unit exists in the user unit directory.
func (m *Manager) SocketInstalled() bool { return m.inst().SocketInstalled() }

// InstalledVersion is the stamp of the installed socket unit.
func (m *Manager) InstalledVersion() int { return m.inst().InstalledVersion() }

// Outdated reports whether installed (a stamp) is older than UnitVersion.
func Outdated(installed int) bool { return daemonctl.Proxy().Outdated(installed) }

// CheckUnitsOutdated is the warning for installed units older than
// UnitVersion, or "". Older units keep working (the proxy takes unnamed
// descriptors in order; docs/install.md, Socket activation and readiness),
// but are Type=simple: active before the proxy serves.
func (m *Manager) CheckUnitsOutdated() string { return m.inst().OutdatedWarning() }

// SocketActive: systemctl --user is-active on the socket unit.
func (m *Manager) SocketActive(ctx context.Context) bool { return m.Systemd.IsActive(ctx, SocketUnit) }

// ServiceActive: the service unit is active (does not trigger activation).
func (m *Manager) ServiceActive(ctx context.Context) bool {
	return m.Systemd.IsActive(ctx, ServiceUnit)
}

// DaemonPID is the PID of our running daemon, if any (PID file, identity
// check with this configuration's PID file path, signal 0).
func (m *Manager) DaemonPID() (int, bool) { return m.inst().DaemonPID() }

// Healthy probes GET http://127.0.0.1:<proxy_port>/-/health.
func (m *Manager) Healthy(ctx context.Context) bool {
	return daemonctl.Healthy(ctx, m.Cfg.ProxyPort, probeTimeout)
}

// WaitReady repeats the health probe every 0.2 s for up to 5 s.
func (m *Manager) WaitReady(ctx context.Context) bool {
	return daemonctl.Poll(ctx, func(ctx context.Context) bool { return daemonctl.Healthy(ctx, m.Cfg.ProxyPort, time.Second) })
}

// RoutesCount is the number of top-level keys of the routes file; 0 when
// it is missing or not a JSON object.
func RoutesCount(path string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(data, &m) != nil {
		return 0
	}
	return len(m)
}

// CredentialsStored lists the providers of the default set; empty when the
// database does not exist, and on a database error (logged).
func (m *Manager) CredentialsStored(ctx context.Context) []string {
	out := []string{}
	path := m.Cfg.CredentialsDB()
	if _, err := os.Stat(path); err != nil {
		return out
	}
	db, err := creddb.Open(path)
	if err != nil {
		m.Log.Warn("cannot read the credentials database for the proxy status", "path", path, "error", err)
		return out
	}
	defer db.Close()
	names, err := db.ListCredentials(ctx, creddb.DefaultSet)
	if err != nil {
		m.Log.Warn("cannot list stored credentials for the proxy status", "path", path, "error", err)
		return out
	}
	sort.Strings(names)
	return names
}

// Status is `proxy status` (docs/credential-proxy.md, Operating it). When the units are installed the daemon is not consulted.
func (m *Manager) Status(ctx context.Context) Status {
	st := Status{
		Mode:              daemonctl.ModeNone,
		SocketPath:        m.Cfg.ProxySocket(),
		DBPath:            m.Cfg.CredentialsDB(),
		RoutesPath:        m.Cfg.RoutesFile(),
		RoutesConfigured:  RoutesCount(m.Cfg.RoutesFile()),
		CredentialsStored: m.CredentialsStored(ctx),
	}
	switch {
	case m.SocketInstalled():
		st.Mode = daemonctl.ModeSystemd
		st.Running = m.ServiceActive(ctx)
		st.Healthy = st.Running && m.Healthy(ctx)
		st.Warning = m.CheckUnitsOutdated()
	default:
		if _, ok := m.DaemonPID(); ok {
			st.Mode, st.Running = daemonctl.ModeDaemon, true
			st.Healthy = m.Healthy(ctx)
		}
	}
	return st
}

// prepareFiles creates what the proxy needs to start: the runtime
// directory, an empty routes file and ssh-keys.json when missing, and the
// log directory.
func (m *Manager) prepareFiles() error {
	if err := os.MkdirAll(m.Cfg.RuntimeDir, 0o700); err != nil {
		return fmt.Errorf("create runtime directory %s: %w", m.Cfg.RuntimeDir, err)
	}
	for _, dir := range []string{filepath.Dir(m.Cfg.ProxySocket()), filepath.Dir(m.Cfg.ProxyPIDFile()), m.Cfg.CredentialsDir} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create directory %s: %w", dir, err)
		}
	}
	_, statErr := os.Lstat(m.Cfg.RoutesFile())
	if err := atomicfile.CreateIfMissing(m.Cfg.RoutesFile(), []byte("{}\n"), 0o600); err != nil {
		return fmt.Errorf("create routes file: %w", err)
	}
	if errors.Is(statErr, os.ErrNotExist) {
		m.Log.Info("created an empty routes file; add provider routes with the operator tooling, then restart the proxy",
			"path", m.Cfg.RoutesFile())
	}
	if err := atomicfile.CreateIfMissing(m.Cfg.SSHKeysJSON(), []byte("{}\n"), 0o600); err != nil {
		return fmt.Errorf("create ssh-keys.json: %w", err)
	}
	if err := atomicfile.MkdirPrivate(filepath.Dir(m.Cfg.ProxyLogFile())); err != nil {
		return fmt.Errorf("create proxy log directory: %w", err)
	}
	if err := atomicfile.MkdirPrivate(m.Cfg.AuditDir()); err != nil {
		return fmt.Errorf("create audit directory: %w", err)
	}
	return nil
}

// AuditArg is the proxy's --audit-file value (docs/audit.md, Files).
func (m *Manager) AuditArg() string { return m.Base.AuditArg("proxy") }

// DaemonArgs is the daemon's command line after the program (docs/credential-proxy.md, Operating it).
func (m *Manager) DaemonArgs() []string {
	level := m.LogLevel
	if level == "" {
		level = "INFO"
	}
	c := m.Cfg
	args := []string{
		"--socket-path=" + c.ProxySocket(),
		"--db-path=" + c.CredentialsDB(),
		"--routes-file=" + c.RoutesFile(),
		"--pid-file=" + c.ProxyPIDFile(),
		"--port=" + strconv.Itoa(c.ProxyPort),
		"--ssh-agent-port=" + strconv.Itoa(c.SSHAgentPort),
		"--ssh-keys-file=" + c.SSHKeysJSON(),
		"--log-file=" + c.ProxyLogFile(),
		"--log-level=" + level,
		"--audit-file=" + m.AuditArg(),
	}
	if c.ProxyStaticMarker {
		// docs/credential-proxy.md, "The static marker".
		args = append(args, "--allow-static-marker")
	}
	return args
}

// StartDaemon launches the proxy in its own session and waits up to 5 s
// for it to answer the health probe (docs/credential-proxy.md, Operating it).
func (m *Manager) StartDaemon(ctx context.Context) error {
	bin, err := m.find()
	if err != nil {
		return err
	}
	if err := m.prepareFiles(); err != nil {
		return err
	}
	// stderr goes to an unlinked file: read on failure, and a daemon that
	// writes to it later can never be killed by a closed pipe.
	errFile, err := os.CreateTemp(m.Cfg.RuntimeDir, ".proxy-start-*.stderr")
	if err != nil {
		return fmt.Errorf("create startup capture file: %w", err)
	}
	_ = os.Remove(errFile.Name())
	defer errFile.Close()
	cmd := exec.Command(bin, m.DaemonArgs()...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, nil, errFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	// The reaper ends when the daemon exits, so it never stays a zombie
	// under a long-running caller.
	exited := make(chan int, 1)
	go func() {
		_ = cmd.Wait()
		exited <- cmd.ProcessState.ExitCode()
	}()
	ready := daemonctl.Poll(ctx, func(ctx context.Context) bool {
		select {
		case code := <-exited:
			exited <- code
			return true // stop polling; checked below
		default:
		}
		return daemonctl.Healthy(ctx, m.Cfg.ProxyPort, time.Second)
	})
	select {
	case code := <-exited:
		_, _ = errFile.Seek(0, io.SeekStart)
		b, _ := io.ReadAll(io.LimitReader(errFile, 64<<10))
		msg := fmt.Sprintf("Credential proxy failed to start (exit %d)", code)
		if s := strings.TrimSpace(string(b)); s != "" {
			msg += ":\n" + s
		}
		return daemonctl.Message(msg)
	default:
	}
	if !ready {
		return daemonctl.Messagef("Credential proxy process started but did not become ready within 5 s.\nCheck logs or try: curl http://127.0.0.1:%d/-/health", m.Cfg.ProxyPort)
	}
	m.Log.Info("credential proxy daemon started", "pid", cmd.Process.Pid, "log", m.Cfg.ProxyLogFile())
	return nil
}

// StopDaemon stops our daemon (docs/credential-proxy.md, Operating it) and reports whether one was signalled.
func (m *Manager) StopDaemon() bool { return m.inst().StopDaemon() }

// RenderUnits renders both unit templates for this configuration.
func (m *Manager) RenderUnits(bin string) ([]daemonctl.Unit, error) {
	vals := map[string]string{
		"UNIT_VERSION":   strconv.Itoa(UnitVersion),
		"SOCKET_PATH":    m.Cfg.ProxySocket(),
		"DB_PATH":        m.Cfg.CredentialsDB(),
		"ROUTES_PATH":    m.Cfg.RoutesFile(),
		"PORT":           strconv.Itoa(m.Cfg.ProxyPort),
		"SSH_AGENT_PORT": strconv.Itoa(m.Cfg.SSHAgentPort),
		"SSH_KEYS_FILE":  m.Cfg.SSHKeysJSON(),
		// The compatibility switch of docs/credential-proxy.md ("The static
		// marker"); changing it needs the units rendered again.
		"ALLOW_STATIC_MARKER": strconv.FormatBool(m.Cfg.ProxyStaticMarker),
		// The hardened service writes nothing else (docs/install.md, Hardening of the units).
		"CREDENTIALS_DIR": m.Cfg.CredentialsDir,
		// Its audit records (docs/audit.md, Files); audit = false in
		// config.toml needs the units rendered again, like the switch above.
		"AUDIT_DIR":  m.Cfg.AuditDir(),
		"AUDIT_FILE": m.AuditArg(),
		"BIN":        bin,
	}
	var units []daemonctl.Unit
	for _, u := range []struct{ name, tmpl string }{{SocketUnit, systemd.ProxySocket}, {ServiceUnit, systemd.ProxyService}} {
		s, err := daemonctl.Render(u.tmpl, vals)
		if err != nil {
			return nil, fmt.Errorf("render %s: %w", u.name, err)
		}
		units = append(units, daemonctl.Unit{Name: u.name, Content: s})
	}
	return units, nil
}

// userUnitDir is the user unit directory, refused for root with the
// proxy's alternative named.
func (m *Manager) userUnitDir() (string, error) {
	if m.Env.EUID == 0 {
		return "", errors.New("refusing to manage systemd user units as root; run as the user who runs the tasks, or use the manual daemon: terok-sandbox proxy start")
	}
	return daemonctl.UserUnitDir(m.Env)
}

// ErrNoSystemd is returned by Install when user services are unavailable.
var ErrNoSystemd = daemonctl.Message("systemd user services are not available on this host.")

// Install writes the units and enables the socket (docs/credential-proxy.md, Operating it). The routes file
// and ssh-keys.json are created empty when missing, since the proxy
// refuses to start without them.
func (m *Manager) Install(ctx context.Context) error {
	dir, err := m.userUnitDir()
	if err != nil {
		return err
	}
	if !m.Systemd.Available(ctx) {
		return ErrNoSystemd
	}
	bin, err := m.find()
	if err != nil {
		return err
	}
	units, err := m.RenderUnits(bin)
	if err != nil {
		return err
	}
	if err := m.prepareFiles(); err != nil {
		return err
	}
	return m.Systemd.Install(ctx, dir, units, SocketUnit)
}

// ErrNoSystemdUninstall is Uninstall's error without systemd.
var ErrNoSystemdUninstall = daemonctl.Message("systemd user services are not available. Nothing to uninstall.")

// Uninstall disables the socket and removes both units (docs/credential-proxy.md, Operating it).
func (m *Manager) Uninstall(ctx context.Context) error {
	dir, err := m.userUnitDir()
	if err != nil {
		return err
	}
	if !m.Systemd.Available(ctx) {
		return ErrNoSystemdUninstall
	}
	return m.Systemd.Uninstall(ctx, dir, daemonctl.Proxy().UnitNames(), SocketUnit)
}

// EnsureReachable is `proxy ensure` (docs/credential-proxy.md, Operating it),
// called before creating a task that uses the proxy. It never starts a daemon; in systemd mode it starts the service
// so the TCP ports (proxy and SSH agent) come up.
func (m *Manager) EnsureReachable(ctx context.Context) error {
	socketActive := m.SocketActive(ctx)
	_, daemon := m.DaemonPID()
	if !socketActive && !daemon {
		return daemonctl.Messagef("Credential proxy is not reachable.\n"+
			"The credential proxy injects real API credentials into requests from task containers "+
			"without exposing them to the containers.\n"+
			"Start it in one of two ways:\n"+
			"  terok-sandbox proxy install   # systemd socket activation (recommended)\n"+
			"  terok-sandbox proxy start     # manual daemon\n"+
			"Socket: %s\nDB:     %s", m.Cfg.ProxySocket(), m.Cfg.CredentialsDB())
	}
	if socketActive {
		_ = m.Systemd.Call(ctx, "start", ServiceUnit)
	}
	if !m.WaitReady(ctx) {
		return daemonctl.Messagef("Credential proxy service started but TCP port %d is not reachable. Check: journalctl --user -u terok-credential-proxy", m.Cfg.ProxyPort)
	}
	if !daemonctl.WaitPort(ctx, m.Cfg.SSHAgentPort) {
		return daemonctl.Messagef("Credential proxy service started but SSH agent port %d is not reachable. Check: journalctl --user -u terok-credential-proxy", m.Cfg.SSHAgentPort)
	}
	return nil
}
