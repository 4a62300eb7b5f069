package shield

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/BurntSushi/toml"

	"terok.dev/sandbox/common/shieldbundle"
)

// System OCI hooks directories podman reads by default, in the order the
// --root setup prefers them (shield.md §13).
var systemHooksDirs = []string{"/usr/share/containers/oci/hooks.d", "/etc/containers/oci/hooks.d"}

// System containers.conf files, in lookup order (shield.md §5).
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
	// SystemHooksDirs are podman's default hooks directories.
	SystemHooksDirs []string
}

// DefaultHostPaths uses the real files (config-and-paths.md §4).
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
		SystemHooksDirs:       append([]string(nil), systemHooksDirs...),
	}
}

// UserHooksDir is the target of `shield setup --user`.
func (h HostPaths) UserHooksDir() string {
	return filepath.Join(h.Home, ".local", "share", "containers", "oci", "hooks.d")
}

// RootHooksDir is the target of `shield setup --root`: the first existing
// system hooks dir, else the last candidate (/etc/...).
func (h HostPaths) RootHooksDir() string {
	for _, d := range h.SystemHooksDirs {
		if st, err := os.Stat(d); err == nil && st.IsDir() {
			return d
		}
	}
	if len(h.SystemHooksDirs) == 0 {
		return "/etc/containers/oci/hooks.d"
	}
	return h.SystemHooksDirs[len(h.SystemHooksDirs)-1]
}

// ExistingSystemHooksDirs lists the system defaults that exist.
func (h HostPaths) ExistingSystemHooksDirs() []string {
	var out []string
	for _, d := range h.SystemHooksDirs {
		if st, err := os.Stat(d); err == nil && st.IsDir() {
			out = append(out, d)
		}
	}
	return out
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

// HooksDirs are the directories podman reads hooks from (shield.md §5):
// the first rule that yields a non-empty list wins. Two podman facts refine
// the spec's list: $CONTAINERS_CONF replaces every other containers.conf,
// and root's podman does not read a user containers.conf.
func (h HostPaths) HooksDirs() []string {
	if h.ContainersConfEnv != "" {
		if d := h.confHooksDirs(h.ContainersConfEnv); len(d) > 0 {
			return d
		}
		return h.ExistingSystemHooksDirs()
	}
	if !h.Root {
		if d := h.confHooksDirs(h.UserContainersConf); len(d) > 0 {
			return d
		}
	}
	for _, c := range h.SystemContainersConfs {
		if d := h.confHooksDirs(c); len(d) > 0 {
			return d
		}
	}
	return h.ExistingSystemHooksDirs()
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
