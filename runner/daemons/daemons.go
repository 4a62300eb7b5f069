// Package daemons is the public lifecycle of the host daemons terok-sandbox
// runs beside the tasks: the gate (git over HTTP, docs/gate.md, Operating it)
// and the credential proxy, whose process also serves the SSH agent
// (docs/credential-proxy.md, Operating it). Each runs either as systemd
// user units with a version stamp or as a detached daemon tracked by a PID
// file; the methods here are those of `terok-sandbox gate …` and
// `terok-sandbox proxy …`.
//
// The SSH agent (terok-ssh-agent) has no lifecycle of its own here: the
// proxy supervises it as a child on config.Config.SSHAgentPort, so it is
// started, stopped, installed and checked with the proxy (Proxy.Ensure
// probes both ports; docs/architecture.md, Processes).
package daemons

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/runner/internal/daemonctl"
	"terok.dev/sandbox/systemd"
)

// Mode is how a daemon runs (or would run): the "mode" of its status.
type Mode string

// The modes of a daemon's status.
const (
	// ModeSystemd: systemd user units are installed (running or not).
	ModeSystemd Mode = daemonctl.ModeSystemd
	// ModeDaemon: a detached process of ours runs, tracked by its PID file.
	ModeDaemon Mode = daemonctl.ModeDaemon
	// ModeNone: neither units nor a daemon.
	ModeNone Mode = daemonctl.ModeNone
)

// Options are what a lifecycle manager needs beyond the configuration.
type Options struct {
	// Env decides where the user units live (XDG_CONFIG_HOME, the home
	// directory, the effective uid); the zero value means config.FromOS().
	Env config.Env
	// Log receives structured warnings; nil discards.
	Log *slog.Logger
	// BinDir holds terok-gate and terok-credential-proxy; "" looks next to
	// the running program, then in the installation's libexec/terok, then
	// on PATH.
	BinDir string
}

// findBinary is the daemon lookup BinDir asks for; nil = the default one.
func (o Options) findBinary() func(string) (string, error) {
	if o.BinDir == "" {
		return nil
	}
	return func(name string) (string, error) {
		p := filepath.Join(o.BinDir, name)
		if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return "", fmt.Errorf("%s is not an executable in Options.BinDir %s", name, o.BinDir)
		}
		return p, nil
	}
}

func (o Options) env() config.Env {
	if o.Env.Getenv == nil && o.Env.Home == "" {
		return config.FromOS()
	}
	return o.Env
}

// Message is the error type of the lifecycle's operator-facing failures
// ("Gate server is not running. …"): full sentences that end in what to
// run, printed as they are. Detect it with errors.As.
type Message = daemonctl.Message

// ErrNoSystemd is the error of Gate.Install and Proxy.Install where
// systemd user services are unavailable; Gate.Uninstall and
// Proxy.Uninstall return ErrNoSystemdUninstall there.
var (
	ErrNoSystemd          = daemonctl.ErrNoSystemd
	ErrNoSystemdUninstall = daemonctl.ErrNoSystemdUninstall
)

// The unit versions this release installs; older installed units are
// reported by UnitsOutdated.
const (
	GateUnitVersion  = systemd.GateUnitVersion
	ProxyUnitVersion = systemd.ProxyUnitVersion
)
