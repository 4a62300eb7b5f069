package daemonctl

import (
	"context"
	"fmt"
	"log/slog"

	"terok.dev/sandbox/common/config"
)

// Base is what the manager of every daemon holds (gatectl and proxyctl
// embed it): one configuration, the environment that decides where user
// units live, the systemd seam, the binary lookup and the log.
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

// Instance is d of this configuration with its PID file.
func (b Base) Instance(d Daemon, pidFile string) Instance {
	return Instance{Daemon: d, Env: b.Env, PIDFile: pidFile, FindBinary: b.FindBinary}
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

// AuditArg is a daemon's --audit-file value: the file of its audit channel,
// or off when config.toml sets audit = false (docs/audit.md, Files,
// rotation, modes).
func (b Base) AuditArg(channel string) string {
	if !b.Cfg.Audit {
		return "off"
	}
	return b.Cfg.AuditFile(channel)
}

// CheckPort refuses a port outside 1-65535, naming whose it is.
func CheckPort(whose string, port int) error {
	if port < 1 || port > 65535 {
		return fmt.Errorf("%s port %d is out of range (1-65535)", whose, port)
	}
	return nil
}
