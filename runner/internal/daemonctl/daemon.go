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

// The binaries of the three daemons the runner renders units for.
const (
	GateBinary  = "terok-gate"
	ProxyBinary = "terok-credential-proxy"
	AgentBinary = "terok-ssh-agent"
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

// Daemon describes one host daemon as data: its binary, its systemd user
// units with their templates and version stamp, where its PID file and
// port come from, and the template values of its own. Gate, Proxy and
// Agent are the three; the lifecycle (Manager) is the same for each.
type Daemon struct {
	// Name is the daemon's short name in messages ("gate port 0 is out of
	// range").
	Name        string
	Binary      string
	SocketUnit  string
	ServiceUnit string
	// Legacy names units of older versions that install and uninstall
	// remove as well.
	Legacy      []string
	StampPrefix string
	UnitVersion int
	// SocketTemplate and ServiceTemplate are the unit templates (package
	// systemd); BinKey is the placeholder of the binary in them.
	SocketTemplate, ServiceTemplate string
	BinKey                          string
	// AuditChannel names the daemon's audit file (docs/audit.md, Files,
	// rotation, modes).
	AuditChannel string
	// PIDFile is the daemon's PID file and Port its configured TCP port.
	PIDFile func(config.Config) string
	Port    func(config.Config) int
	// Values are the template placeholders of this daemon beyond those
	// every daemon has (UNIT_VERSION, PORT, BinKey, AUDIT_DIR, AUDIT_FILE).
	Values func(config.Config) map[string]string
}

// Gate is terok-gate.
func Gate() Daemon {
	return Daemon{
		Name:            "gate",
		Binary:          GateBinary,
		SocketUnit:      systemd.GateSocketName,
		ServiceUnit:     systemd.GateServiceName,
		Legacy:          []string{systemd.LegacyGateServiceName},
		StampPrefix:     systemd.GateStampPrefix,
		UnitVersion:     systemd.GateUnitVersion,
		SocketTemplate:  systemd.GateSocket,
		ServiceTemplate: systemd.GateService,
		BinKey:          "TEROK_GATE_BIN",
		AuditChannel:    "gate",
		PIDFile:         config.Config.GatePIDFile,
		Port:            func(c config.Config) int { return c.GatePort },
		Values: func(c config.Config) map[string]string {
			return map[string]string{"GATE_BASE_PATH": c.GateBasePath(), "TOKEN_FILE": c.GateTokenFile()}
		},
	}
}

// Proxy is terok-credential-proxy (which supervises the SSH agent on
// SSHAgentPort).
func Proxy() Daemon {
	return Daemon{
		Name:            "proxy",
		Binary:          ProxyBinary,
		SocketUnit:      systemd.ProxySocketName,
		ServiceUnit:     systemd.ProxyServiceName,
		StampPrefix:     systemd.ProxyStampPrefix,
		UnitVersion:     systemd.ProxyUnitVersion,
		SocketTemplate:  systemd.ProxySocket,
		ServiceTemplate: systemd.ProxyService,
		BinKey:          "BIN",
		AuditChannel:    "proxy",
		PIDFile:         config.Config.ProxyPIDFile,
		Port:            func(c config.Config) int { return c.ProxyPort },
		Values: func(c config.Config) map[string]string {
			return map[string]string{
				"SOCKET_PATH":    c.ProxySocket(),
				"DB_PATH":        c.CredentialsDB(),
				"ROUTES_PATH":    c.RoutesFile(),
				"SSH_AGENT_PORT": strconv.Itoa(c.SSHAgentPort),
				"SSH_KEYS_FILE":  c.SSHKeysJSON(),
				// The compatibility switch of docs/credential-proxy.md ("The
				// static marker"); changing it needs the units rendered again.
				"ALLOW_STATIC_MARKER": strconv.FormatBool(c.ProxyStaticMarker),
				// The hardened service writes nothing else (docs/install.md,
				// Hardening of the units).
				"CREDENTIALS_DIR": c.CredentialsDir,
			}
		},
	}
}

// Agent is the standalone terok-ssh-agent (docs/ssh-agent.md, The server):
// its units are for hosts that run the agent without the proxy; it has no
// PID-file daemon mode of its own (the proxy supervises it otherwise).
func Agent() Daemon {
	return Daemon{
		Name:            "ssh-agent",
		Binary:          AgentBinary,
		SocketUnit:      systemd.SSHAgentSocketName,
		ServiceUnit:     systemd.SSHAgentServiceName,
		StampPrefix:     systemd.SSHAgentStampPrefix,
		UnitVersion:     systemd.SSHAgentUnitVersion,
		SocketTemplate:  systemd.SSHAgentSocket,
		ServiceTemplate: systemd.SSHAgentService,
		BinKey:          "BIN",
		AuditChannel:    "ssh",
		PIDFile:         func(config.Config) string { return "" },
		Port:            func(c config.Config) int { return c.SSHAgentPort },
		Values: func(c config.Config) map[string]string {
			return map[string]string{
				"DB_PATH":       c.CredentialsDB(),
				"SSH_KEYS_FILE": c.SSHKeysJSON(),
				// The hardened service writes nothing else (docs/install.md,
				// Hardening of the units).
				"CREDENTIALS_DIR": c.CredentialsDir,
			}
		},
	}
}

// AuditArg is a daemon's --audit-file value: the file of its audit channel,
// or off when config.toml sets audit = false (docs/audit.md, Files,
// rotation, modes).
func (d Daemon) AuditArg(cfg config.Config) string {
	if !cfg.Audit {
		return "off"
	}
	return cfg.AuditFile(d.AuditChannel)
}

// RenderUnits renders d's socket and service for cfg, bin as its binary
// and port as its TCP port (an explicit override or d.Port(cfg)). Its audit
// records go to AUDIT_FILE in AUDIT_DIR (docs/audit.md, Files, rotation,
// modes); audit = false in config.toml needs the units rendered again.
func (d Daemon) RenderUnits(cfg config.Config, bin string, port int) ([]Unit, error) {
	if err := CheckPort(d.Name, port); err != nil {
		return nil, err
	}
	vals := d.Values(cfg)
	vals["UNIT_VERSION"] = strconv.Itoa(d.UnitVersion)
	vals["PORT"] = strconv.Itoa(port)
	vals[d.BinKey] = bin
	vals["AUDIT_DIR"] = cfg.AuditDir()
	vals["AUDIT_FILE"] = d.AuditArg(cfg)
	var units []Unit
	for _, u := range []struct{ name, tmpl string }{{d.SocketUnit, d.SocketTemplate}, {d.ServiceUnit, d.ServiceTemplate}} {
		out, err := Render(u.tmpl, vals)
		if err != nil {
			return nil, fmt.Errorf("render %s: %w", u.name, err)
		}
		units = append(units, Unit{Name: u.name, Content: out})
	}
	return units, nil
}

// CheckPort refuses a port outside 1-65535, naming whose it is.
func CheckPort(whose string, port int) error {
	if port < 1 || port > 65535 {
		return fmt.Errorf("%s port %d is out of range (1-65535)", whose, port)
	}
	return nil
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
