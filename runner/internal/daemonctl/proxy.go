package daemonctl

// The credential proxy's lifecycle (docs/credential-proxy.md, Operating
// it): systemd user units (socket activation) or a detached daemon tracked
// by a PID file whose owner is checked through /proc, plus the probes and
// the status object.

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
)

// proxyProbeTimeout bounds one health probe of `proxy status`.
const proxyProbeTimeout = 2 * time.Second

// ProxyStatus is what `proxy status` reports (docs/credential-proxy.md,
// Operating it); Mode is one of ModeSystemd, ModeDaemon, ModeNone.
type ProxyStatus struct {
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

// ProxyManager manages the credential proxy of one configuration: the
// shared Manager with Proxy() as its data, plus the proxy's probes,
// status, start and ensure. Every path comes from Cfg.
type ProxyManager struct {
	Manager
	// LogLevel of a started daemon ("" = INFO).
	LogLevel string
}

// NewProxyManager returns the proxy's manager using the real systemctl.
func NewProxyManager(cfg config.Config, env config.Env, log *slog.Logger) *ProxyManager {
	return &ProxyManager{Manager: NewManager(Proxy(), cfg, env, log)}
}

// CheckUnitsOutdated is the warning for installed units older than
// UnitVersion, or "". Older units keep working (the proxy takes unnamed
// descriptors in order; docs/install.md, Socket activation and readiness),
// but are Type=simple: active before the proxy serves.
func (m *ProxyManager) CheckUnitsOutdated() string { return m.Instance().OutdatedWarning() }

// SocketActive: systemctl --user is-active on the socket unit.
func (m *ProxyManager) SocketActive(ctx context.Context) bool {
	return m.Systemd.IsActive(ctx, m.Daemon.SocketUnit)
}

// ServiceActive: the service unit is active (does not trigger activation).
func (m *ProxyManager) ServiceActive(ctx context.Context) bool {
	return m.Systemd.IsActive(ctx, m.Daemon.ServiceUnit)
}

// Healthy probes GET http://127.0.0.1:<proxy_port>/-/health.
func (m *ProxyManager) Healthy(ctx context.Context) bool {
	return Healthy(ctx, m.Cfg.ProxyPort, proxyProbeTimeout)
}

// WaitReady repeats the health probe every 0.2 s for up to 5 s.
func (m *ProxyManager) WaitReady(ctx context.Context) bool {
	return Poll(ctx, func(ctx context.Context) bool { return Healthy(ctx, m.Cfg.ProxyPort, time.Second) })
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
func (m *ProxyManager) CredentialsStored(ctx context.Context) []string {
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
func (m *ProxyManager) Status(ctx context.Context) ProxyStatus {
	st := ProxyStatus{
		Mode:              ModeNone,
		SocketPath:        m.Cfg.ProxySocket(),
		DBPath:            m.Cfg.CredentialsDB(),
		RoutesPath:        m.Cfg.RoutesFile(),
		RoutesConfigured:  RoutesCount(m.Cfg.RoutesFile()),
		CredentialsStored: m.CredentialsStored(ctx),
	}
	switch {
	case m.SocketInstalled():
		st.Mode = ModeSystemd
		st.Running = m.ServiceActive(ctx)
		st.Healthy = st.Running && m.Healthy(ctx)
		st.Warning = m.CheckUnitsOutdated()
	default:
		if _, ok := m.DaemonPID(); ok {
			st.Mode, st.Running = ModeDaemon, true
			st.Healthy = m.Healthy(ctx)
		}
	}
	return st
}

// PrepareFiles creates what the proxy needs to start: the runtime
// directory, an empty routes file and ssh-keys.json when missing, and the
// log directory.
func (m *ProxyManager) PrepareFiles() error {
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

// DaemonArgs is the daemon's command line after the program (docs/credential-proxy.md, Operating it).
func (m *ProxyManager) DaemonArgs() []string {
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
func (m *ProxyManager) StartDaemon(ctx context.Context) error {
	bin, err := m.Find()
	if err != nil {
		return err
	}
	if err := m.PrepareFiles(); err != nil {
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
	ready := Poll(ctx, func(ctx context.Context) bool {
		select {
		case code := <-exited:
			exited <- code
			return true // stop polling; checked below
		default:
		}
		return Healthy(ctx, m.Cfg.ProxyPort, time.Second)
	})
	select {
	case code := <-exited:
		_, _ = errFile.Seek(0, io.SeekStart)
		b, _ := io.ReadAll(io.LimitReader(errFile, 64<<10))
		msg := fmt.Sprintf("Credential proxy failed to start (exit %d)", code)
		if s := strings.TrimSpace(string(b)); s != "" {
			msg += ":\n" + s
		}
		return Message(msg)
	default:
	}
	if !ready {
		return Messagef("Credential proxy process started but did not become ready within 5 s.\nCheck logs or try: curl http://127.0.0.1:%d/-/health", m.Cfg.ProxyPort)
	}
	m.Log.Info("credential proxy daemon started", "pid", cmd.Process.Pid, "log", m.Cfg.ProxyLogFile())
	return nil
}

// userUnitDir is the user unit directory, refused for root with the
// proxy's alternative named.
func (m *ProxyManager) userUnitDir() (string, error) {
	if m.Env.EUID == 0 {
		return "", errors.New("refusing to manage systemd user units as root; run as the user who runs the tasks, or use the manual daemon: terok-sandbox proxy start")
	}
	return UserUnitDir(m.Env)
}

// Install writes the units and enables the socket (docs/credential-proxy.md, Operating it). The routes file
// and ssh-keys.json are created empty when missing, since the proxy
// refuses to start without them.
func (m *ProxyManager) Install(ctx context.Context) error {
	dir, err := m.userUnitDir()
	if err != nil {
		return err
	}
	if !m.Systemd.Available(ctx) {
		return ErrNoSystemd
	}
	return m.InstallUnits(ctx, dir, m.Cfg.ProxyPort, m.PrepareFiles)
}

// Uninstall disables the socket and removes both units (docs/credential-proxy.md, Operating it).
func (m *ProxyManager) Uninstall(ctx context.Context) error {
	dir, err := m.userUnitDir()
	if err != nil {
		return err
	}
	if !m.Systemd.Available(ctx) {
		return ErrNoSystemdUninstall
	}
	return m.UninstallUnits(ctx, dir)
}

// EnsureReachable is `proxy ensure` (docs/credential-proxy.md, Operating it),
// called before creating a task that uses the proxy. It never starts a daemon; in systemd mode it starts the service
// so the TCP ports (proxy and SSH agent) come up.
func (m *ProxyManager) EnsureReachable(ctx context.Context) error {
	socketActive := m.SocketActive(ctx)
	_, daemon := m.DaemonPID()
	if !socketActive && !daemon {
		return Messagef("Credential proxy is not reachable.\n"+
			"The credential proxy injects real API credentials into requests from task containers "+
			"without exposing them to the containers.\n"+
			"Start it in one of two ways:\n"+
			"  terok-sandbox proxy install   # systemd socket activation (recommended)\n"+
			"  terok-sandbox proxy start     # manual daemon\n"+
			"Socket: %s\nDB:     %s", m.Cfg.ProxySocket(), m.Cfg.CredentialsDB())
	}
	if socketActive {
		_ = m.Systemd.Call(ctx, "start", m.Daemon.ServiceUnit)
	}
	if !m.WaitReady(ctx) {
		return Messagef("Credential proxy service started but TCP port %d is not reachable. Check: journalctl --user -u terok-credential-proxy", m.Cfg.ProxyPort)
	}
	if !WaitPort(ctx, m.Cfg.SSHAgentPort) {
		return Messagef("Credential proxy service started but SSH agent port %d is not reachable. Check: journalctl --user -u terok-credential-proxy", m.Cfg.SSHAgentPort)
	}
	return nil
}
