package shield

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/BurntSushi/toml"

	"terok.dev/sandbox/common/shieldbundle"
)

// podmanDefaultHooksDirs is what podman reads when no containers.conf sets
// [engine] hooks_dir: only /usr/share/containers/oci/hooks.d (measured on
// podman 4.3.1). The spec's rule 3 also lists /etc/containers/oci/hooks.d;
// podman does not read it, so hooks installed there never run — a container
// would start without its firewall while the check said "ok". Only
// directories podman really reads count, and --root installs into one.
var podmanDefaultHooksDirs = []string{"/usr/share/containers/oci/hooks.d"}

// System containers.conf files, in lookup order (docs/config.md, Other locations).
var systemContainersConfs = []string{"/etc/containers/containers.conf", "/usr/share/containers/containers.conf"}

// HostPaths are the host locations the hooks logic reads and writes. Tests
// point them into a temporary tree; Default gives the real ones.
type HostPaths struct {
	// Home is the user's home directory ("~" expansion, user hooks dir).
	Home string
	// UserContainersConf is the user containers.conf.
	UserContainersConf string
	// ContainersConfEnv is $CONTAINERS_CONF: when set, podman reads that
	// file instead of every other containers.conf.
	ContainersConfEnv string
	// Root: podman 4.x reads the user containers.conf only when rootless.
	Root bool
	// SystemContainersConfs are read in order after the user file.
	SystemContainersConfs []string
	// SystemHooksDirs are the hooks directories podman reads when no
	// containers.conf configures any (its built-in default).
	SystemHooksDirs []string
}

// DefaultHostPaths uses the real files (docs/config.md, Other locations).
func DefaultHostPaths(home, xdgConfigHome, containersConf string, root bool) HostPaths {
	confDir := filepath.Join(home, ".config")
	if xdgConfigHome != "" && filepath.IsAbs(xdgConfigHome) {
		confDir = xdgConfigHome
	}
	return HostPaths{
		Home:                  home,
		UserContainersConf:    filepath.Join(confDir, "containers", "containers.conf"),
		ContainersConfEnv:     containersConf,
		Root:                  root,
		SystemContainersConfs: append([]string(nil), systemContainersConfs...),
		SystemHooksDirs:       append([]string(nil), podmanDefaultHooksDirs...),
	}
}

// UserHooksDir is the target of `shield setup --user`.
func (h HostPaths) UserHooksDir() string {
	return filepath.Join(h.Home, ".local", "share", "containers", "oci", "hooks.d")
}

// ExistingSystemHooksDirs lists podman's built-in hooks directories that
// exist.
func (h HostPaths) ExistingSystemHooksDirs() []string {
	var out []string
	for _, d := range h.SystemHooksDirs {
		if st, err := os.Stat(d); err == nil && st.IsDir() {
			out = append(out, d)
		}
	}
	return out
}

// configuredHooksDirs is the hooks_dir list of the containers.conf files
// podman reads (docs/shield.md, Global hooks and `shield setup`), nil when none sets one.
func (h HostPaths) configuredHooksDirs() []string {
	if h.ContainersConfEnv != "" {
		return h.confHooksDirs(h.ContainersConfEnv)
	}
	if !h.Root {
		if d := h.confHooksDirs(h.UserContainersConf); len(d) > 0 {
			return d
		}
	}
	return h.systemConfiguredHooksDirs()
}

// systemConfiguredHooksDirs is the hooks_dir of the system containers.conf
// files (or of $CONTAINERS_CONF), ignoring the user file.
func (h HostPaths) systemConfiguredHooksDirs() []string {
	if h.ContainersConfEnv != "" {
		return h.confHooksDirs(h.ContainersConfEnv)
	}
	for _, c := range h.SystemContainersConfs {
		if d := h.confHooksDirs(c); len(d) > 0 {
			return d
		}
	}
	return nil
}

// expandHome replaces a leading "~".
func (h HostPaths) expandHome(p string) string {
	if p == "~" {
		return h.Home
	}
	if strings.HasPrefix(p, "~/") {
		return filepath.Join(h.Home, p[2:])
	}
	return p
}

// confHooksDirs reads [engine] hooks_dir (string or list of strings) from a
// containers.conf. Unreadable or invalid TOML counts as not configured.
func (h HostPaths) confHooksDirs(path string) []string {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	return h.confHooksDirsData(data)
}

func (h HostPaths) confHooksDirsData(data []byte) []string {
	var doc struct {
		Engine struct {
			HooksDir any `toml:"hooks_dir"`
		} `toml:"engine"`
	}
	if _, err := toml.Decode(string(data), &doc); err != nil {
		return nil
	}
	var out []string
	switch v := doc.Engine.HooksDir.(type) {
	case string:
		if v != "" {
			out = append(out, h.expandHome(v))
		}
	case []any:
		for _, e := range v {
			if s, ok := e.(string); ok && s != "" {
				out = append(out, h.expandHome(s))
			}
		}
	}
	return out
}

// HooksDirs are the directories podman reads hooks from (docs/shield.md, Global hooks and `shield setup`):
// the configured hooks_dir, else podman's built-in default. Two podman facts
// refine the spec's lookup: $CONTAINERS_CONF replaces every other
// containers.conf, and root's podman does not read a user containers.conf.
// Unlike the spec's rule 3, /etc/containers/oci/hooks.d is not a default.
func (h HostPaths) HooksDirs() []string {
	if d := h.configuredHooksDirs(); len(d) > 0 {
		return d
	}
	return append([]string(nil), h.SystemHooksDirs...)
}

// RootSetupDir is where `shield setup --root` installs the hooks: the first
// hooks_dir root's podman is configured with, else podman's built-in
// default (created if missing).
func (h HostPaths) RootSetupDir() string {
	p := h
	p.Root = true
	if d := p.configuredHooksDirs(); len(d) > 0 {
		return d[0]
	}
	if len(h.SystemHooksDirs) > 0 {
		return h.SystemHooksDirs[0]
	}
	return podmanDefaultHooksDirs[0]
}

// UserHooksDirList is the hooks_dir list `shield setup --user` writes: what
// podman reads today without a user hooks_dir (the system configuration's
// list, else the built-in defaults that exist), then target. Naming only
// target would silently disable every other installed hook.
func (h HostPaths) UserHooksDirList(target string) []string {
	base := h.systemConfiguredHooksDirs()
	if len(base) == 0 {
		base = h.ExistingSystemHooksDirs()
	}
	out := []string{}
	for _, d := range base {
		if !containsPath(out, d) && !containsPath([]string{target}, d) {
			out = append(out, d)
		}
	}
	return append(out, target)
}

// GlobalHookDir returns the first hooks directory podman reads that holds
// the createRuntime descriptor, or "".
func (h HostPaths) GlobalHookDir() string {
	for _, d := range h.HooksDirs() {
		if st, err := os.Stat(filepath.Join(d, shieldbundle.DescCreateRuntime)); err == nil && st.Mode().IsRegular() {
			return d
		}
	}
	return ""
}
