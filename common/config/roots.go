package config

import (
	"os"
	"path/filepath"
	"strings"
)

// Env is what root resolution reads from the process: a variable lookup, the
// effective UID and the home directory. Tests build one by hand; FromOS reads
// the real process.
type Env struct {
	Getenv func(string) string
	EUID   int
	Home   string
}

// FromOS returns the Env of the running process.
func FromOS() Env {
	home, err := os.UserHomeDir()
	if err != nil {
		home = "/"
	}
	return Env{Getenv: os.Getenv, EUID: os.Geteuid(), Home: home}
}

func (e Env) get(name string) string {
	if e.Getenv == nil {
		return ""
	}
	return e.Getenv(name)
}

// Expand replaces a leading "~" with the home directory and makes the result
// absolute against the current directory, so that absolute paths are what
// get baked into units and annotations.
func (e Env) Expand(p string) string {
	if p == "~" {
		p = e.Home
	} else if strings.HasPrefix(p, "~/") {
		p = filepath.Join(e.Home, p[2:])
	}
	if !filepath.IsAbs(p) {
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
	}
	return filepath.Clean(p)
}

// first returns the first candidate that yields a non-empty path.
func (e Env) resolve(override, rootPath string, xdg []xdgFallback, homeRel string) string {
	if v := e.get(override); v != "" {
		return e.Expand(v)
	}
	if e.EUID == 0 {
		return rootPath
	}
	for _, x := range xdg {
		if v := e.get(x.env); v != "" {
			return filepath.Join(e.Expand(v), x.rel)
		}
	}
	return filepath.Join(e.Home, homeRel)
}

type xdgFallback struct{ env, rel string }

// StateRoot resolves the state root (docs/config.md, Base directories).
func (e Env) StateRoot() string {
	return e.resolve("TEROK_SANDBOX_STATE_DIR", "/var/lib/terok/sandbox",
		[]xdgFallback{{"XDG_DATA_HOME", "terok/sandbox"}}, ".local/share/terok/sandbox")
}

// RuntimeRoot resolves the runtime root (docs/config.md, Base directories).
func (e Env) RuntimeRoot() string {
	return e.resolve("TEROK_SANDBOX_RUNTIME_DIR", "/run/terok/sandbox",
		[]xdgFallback{{"XDG_RUNTIME_DIR", "terok/sandbox"}, {"XDG_STATE_HOME", "terok/sandbox"}},
		".local/state/terok/sandbox")
}

// ConfigRoot resolves the sandbox config root (docs/config.md, Base directories).
func (e Env) ConfigRoot() string {
	return e.resolve("TEROK_SANDBOX_CONFIG_DIR", "/etc/terok/sandbox",
		[]xdgFallback{{"XDG_CONFIG_HOME", "terok/sandbox"}}, ".config/terok/sandbox")
}

// CredentialsRoot resolves the shared credentials root (docs/config.md, Base directories).
func (e Env) CredentialsRoot() string {
	return e.resolve("TEROK_CREDENTIALS_DIR", "/var/lib/terok/credentials",
		[]xdgFallback{{"XDG_DATA_HOME", "terok/credentials"}}, ".local/share/terok/credentials")
}

// UmbrellaConfigRoot resolves the tool family's config root (docs/config.md, Base directories).
func (e Env) UmbrellaConfigRoot() string {
	return e.resolve("TEROK_CONFIG_DIR", "/etc/terok",
		[]xdgFallback{{"XDG_CONFIG_HOME", "terok"}}, ".config/terok")
}

// SystemdUserUnitDir is where user units go (docs/config.md, Other locations).
func (e Env) SystemdUserUnitDir() string {
	if v := e.get("XDG_CONFIG_HOME"); v != "" {
		return filepath.Join(e.Expand(v), "systemd", "user")
	}
	return filepath.Join(e.Home, ".config", "systemd", "user")
}

// RunnerDebugLog is the runner library's best-effort debug log (docs/config.md, Other locations).
func (e Env) RunnerDebugLog() string {
	if v := e.get("XDG_STATE_HOME"); v != "" {
		return filepath.Join(e.Expand(v), "terok-sandbox", "terok-sandbox.log")
	}
	return filepath.Join(e.Home, ".local", "state", "terok-sandbox", "terok-sandbox.log")
}
