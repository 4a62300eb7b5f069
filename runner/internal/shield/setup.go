package shield

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"terok.dev/sandbox/common/atomicfile"
	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/runner/internal/seccomp"
)

// SetupOptions drive the global hook installation (docs/shield.md, Global hooks and `shield setup`).
type SetupOptions struct {
	Root, User bool
	// HookBinary is the installed terok-shield-hook executable the
	// descriptors name (it is not copied).
	HookBinary string
	Paths      HostPaths
	// EUID decides whether --root needs sudo.
	EUID  int
	Tools Tools
	// Out receives progress and warnings.
	Out io.Writer
	// SeccompProfile is where the sandbox's seccomp profile goes (the
	// config root's seccomp.json, docs/seccomp.md); "" installs none. A
	// --root setup without root privileges writes root's profile through
	// sudo instead: SeccompRootProfile, "" meaning root's default location
	// (seccomp.RootPath).
	SeccompProfile     string
	SeccompRootProfile string
}

// SetupResult says where the hooks went.
type SetupResult struct {
	Dir string
	// SeccompProfile is the installed profile ("" when none was asked for).
	SeccompProfile string
	// ConfChanged is true when the user containers.conf was created/edited.
	ConfChanged bool
	// Warning is set when containers.conf needs a manual change.
	Warning string
}

// Setup installs the global hooks.
func Setup(ctx context.Context, o SetupOptions) (SetupResult, error) {
	switch {
	case o.Root && o.User:
		return SetupResult{}, errors.New("--root and --user are mutually exclusive")
	case !o.Root && !o.User:
		return SetupResult{}, fmt.Errorf("choose where to install the global shield hooks:\n"+
			"  --root   system-wide, uses sudo (target: %s)\n"+
			"  --user   user-local (%s)", o.rootTarget(), o.Paths.UserHooksDir())
	}
	if o.HookBinary == "" {
		return SetupResult{}, errors.New("terok-shield-hook not found next to terok-sandbox or on PATH; build or install it first (make build / make install)")
	}
	hookPath, err := o.trustedHook()
	if err != nil {
		return SetupResult{}, err
	}
	var res SetupResult
	if o.Root {
		res, err = o.setupRoot(ctx, hookPath)
	} else {
		res, err = o.setupUser(hookPath)
	}
	if err != nil {
		return res, err
	}
	res.SeccompProfile, err = o.installSeccomp(ctx)
	return res, err
}

// trustedHook is the executable the descriptors name: the installed hook
// itself, never a copy in hooks.d (docs/install.md, The OCI hook). Root's
// podman runs it as root, so for --root only root may be able to change
// it; for --user the user may too.
func (o SetupOptions) trustedHook() (string, error) {
	abs, err := filepath.Abs(o.HookBinary)
	if err != nil {
		return "", fmt.Errorf("hook executable %s: %w", o.HookBinary, err)
	}
	owners := []int{0}
	if !o.Root && o.EUID != 0 {
		owners = append(owners, o.EUID)
	}
	return shieldbundle.CheckHookBinary(abs, owners)
}

// rootTarget is the --root directory: a directory root's podman really
// reads (HostPaths.RootSetupDir).
func (o SetupOptions) rootTarget() string { return o.Paths.RootSetupDir() }

// writeHookFiles writes both descriptors, naming hookPath, into dir, each
// atomically, and removes the copy of the hook an older setup put there.
func writeHookFiles(dir, hookPath string) error {
	for _, stage := range []string{"createRuntime", "poststop"} {
		desc, err := shieldbundle.Descriptor(stage, hookPath)
		if err != nil {
			return fmt.Errorf("render %s hook descriptor: %w", stage, err)
		}
		if err := atomicfile.WriteFile(filepath.Join(dir, "terok-shield-"+stage+".json"), desc, 0o644); err != nil {
			return fmt.Errorf("write %s hook descriptor: %w", stage, err)
		}
	}
	if old := filepath.Join(dir, shieldbundle.HookBinary); old != hookPath {
		if err := os.Remove(old); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove the old hook copy %s: %w", old, err)
		}
	}
	return nil
}

func (o SetupOptions) setupRoot(ctx context.Context, hookPath string) (SetupResult, error) {
	target := o.rootTarget()
	if o.EUID == 0 {
		if err := os.MkdirAll(target, 0o755); err != nil {
			return SetupResult{}, fmt.Errorf("create hooks directory %s: %w", target, err)
		}
		if err := writeHookFiles(target, hookPath); err != nil {
			return SetupResult{}, fmt.Errorf("install hooks into %s: %w", target, err)
		}
		return SetupResult{Dir: target}, nil
	}
	tmp, err := os.MkdirTemp("", "terok-shield-setup-")
	if err != nil {
		return SetupResult{}, fmt.Errorf("create temporary directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := writeHookFiles(tmp, hookPath); err != nil {
		return SetupResult{}, err
	}
	sudo := o.Tools.LookPath("sudo", "/usr/bin/sudo")
	if sudo == "" {
		return SetupResult{}, fmt.Errorf("--root needs sudo to write %s, and sudo is not installed; run the setup as root or use --user", target)
	}
	files := []string{filepath.Join(tmp, shieldbundle.DescCreateRuntime), filepath.Join(tmp, shieldbundle.DescPoststop)}
	steps := [][]string{
		{sudo, "mkdir", "-p", target},
		append(append([]string{sudo, "cp"}, files...), target+"/"),
	}
	if old := filepath.Join(target, shieldbundle.HookBinary); old != hookPath {
		steps = append(steps, []string{sudo, "rm", "-f", old})
	}
	for _, argv := range steps {
		res, err := o.Tools.Run(ctx, 5*time.Minute, "", argv...)
		if err != nil {
			return SetupResult{}, fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
		}
		if res.Code != 0 {
			return SetupResult{}, fmt.Errorf("%s failed (exit %d): %s", strings.Join(argv, " "), res.Code, res.Combined())
		}
	}
	return SetupResult{Dir: target}, nil
}

func (o SetupOptions) setupUser(hookPath string) (SetupResult, error) {
	target := o.Paths.UserHooksDir()
	if err := os.MkdirAll(target, 0o755); err != nil {
		return SetupResult{}, fmt.Errorf("create hooks directory %s: %w", target, err)
	}
	if err := writeHookFiles(target, hookPath); err != nil {
		return SetupResult{}, fmt.Errorf("install hooks into %s: %w", target, err)
	}
	res := SetupResult{Dir: target}
	changed, warning, err := EnsureUserHooksDir(o.Paths, target)
	if err != nil {
		return res, err
	}
	res.ConfChanged, res.Warning = changed, warning
	if o.EUID == 0 {
		extra := "you are root: root's podman does not read the user containers.conf, so these hooks protect no rootful container; use 'terok-sandbox shield setup --root'"
		if res.Warning != "" {
			res.Warning += "\n" + extra
		} else {
			res.Warning = extra
		}
	}
	if o.Paths.ContainersConfEnv != "" {
		extra := fmt.Sprintf("CONTAINERS_CONF is set (%s): podman reads only that file, so add %q to its [engine] hooks_dir list as well",
			o.Paths.ContainersConfEnv, target)
		if res.Warning != "" {
			res.Warning += "\n" + extra
		} else {
			res.Warning = extra
		}
	}
	return res, nil
}

// EnsureUserHooksDir makes the user containers.conf list target among the
// hooks directories, keeping podman's existing defaults in the list (a
// hooks_dir naming only the user directory would silently disable every
// other installed hook). Comments and formatting are preserved: the file is
// edited as text, never re-encoded.
func EnsureUserHooksDir(p HostPaths, target string) (changed bool, warning string, err error) {
	path := p.UserContainersConf
	line := "hooks_dir = " + tomlStringList(p.UserHooksDirList(target))
	data, rerr := os.ReadFile(path)
	if errors.Is(rerr, os.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return false, "", fmt.Errorf("create %s: %w", filepath.Dir(path), err)
		}
		if err := atomicfile.WriteFile(path, []byte("[engine]\n"+line+"\n"), 0o644); err != nil {
			return false, "", fmt.Errorf("write %s: %w", path, err)
		}
		return true, "", nil
	}
	if rerr != nil {
		return false, "", fmt.Errorf("read %s: %w", path, rerr)
	}
	var doc struct {
		Engine struct {
			HooksDir any `toml:"hooks_dir"`
		} `toml:"engine"`
	}
	if _, err := toml.Decode(string(data), &doc); err != nil {
		return false, "", fmt.Errorf("%s is not valid TOML (%v); fix it, then run the setup again", path, err)
	}
	if doc.Engine.HooksDir != nil {
		current := p.confHooksDirs(path)
		for _, d := range current {
			if filepath.Clean(d) == filepath.Clean(target) {
				return false, "", nil
			}
		}
		return false, fmt.Sprintf("%s already sets [engine] hooks_dir = %s; add %q to that list yourself so podman finds the shield hooks",
			path, tomlStringList(current), target), nil
	}
	text := string(data)
	lines := strings.SplitAfter(text, "\n")
	inserted := false
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l)
		if !inserted && strings.TrimSpace(l) == "[engine]" {
			if !strings.HasSuffix(l, "\n") {
				b.WriteString("\n")
			}
			b.WriteString(line + "\n")
			inserted = true
		}
	}
	out := b.String()
	if !inserted {
		if out != "" && !strings.HasSuffix(out, "\n") {
			out += "\n"
		}
		out += "\n[engine]\n" + line + "\n"
	}
	// The result must still be TOML that podman reads our list from.
	if got := p.confHooksDirsData([]byte(out)); !containsPath(got, target) {
		return false, "", fmt.Errorf("editing %s would not yield a hooks_dir podman reads; add hooks_dir = %s to its [engine] section yourself", path, tomlStringList(p.UserHooksDirList(target)))
	}
	st, err := os.Stat(path)
	mode := os.FileMode(0o644)
	if err == nil {
		mode = st.Mode().Perm()
	}
	if err := atomicfile.WriteFile(path, []byte(out), mode); err != nil {
		return false, "", fmt.Errorf("write %s: %w", path, err)
	}
	return true, "", nil
}

func containsPath(list []string, p string) bool {
	for _, d := range list {
		if filepath.Clean(d) == filepath.Clean(p) {
			return true
		}
	}
	return false
}

// tomlStringList renders ["a", "b"] with TOML basic-string escaping.
func tomlStringList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = tomlString(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// installSeccomp generates the sandbox's seccomp profile from podman's
// installed default (docs/seccomp.md) and writes it where the runner looks.
func (o SetupOptions) installSeccomp(ctx context.Context) (string, error) {
	if o.SeccompProfile == "" {
		return "", nil
	}
	src, err := seccomp.FindPodmanDefault()
	if err != nil {
		return "", err
	}
	if !o.Root || o.EUID == 0 {
		if err := seccomp.Install(src, o.SeccompProfile); err != nil {
			return "", err
		}
		return o.SeccompProfile, nil
	}
	data, err := seccomp.Build(src)
	if err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp("", "terok-seccomp-setup-")
	if err != nil {
		return "", fmt.Errorf("create temporary directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := os.WriteFile(filepath.Join(tmp, seccomp.FileName), data, 0o644); err != nil {
		return "", fmt.Errorf("write seccomp profile: %w", err)
	}
	dst := o.SeccompRootProfile
	if dst == "" {
		dst = seccomp.RootPath
	}
	sudo := o.Tools.LookPath("sudo", "/usr/bin/sudo")
	if sudo == "" {
		return "", fmt.Errorf("--root needs sudo to write %s, and sudo is not installed; run the setup as root", dst)
	}
	// Copy beside the target, then rename: podman never reads half a file.
	next := dst + ".new"
	for _, argv := range [][]string{
		{sudo, "mkdir", "-p", "-m", "0755", filepath.Dir(dst)},
		{sudo, "cp", filepath.Join(tmp, seccomp.FileName), next},
		{sudo, "chmod", "0644", next},
		{sudo, "mv", "-f", next, dst},
	} {
		res, err := o.Tools.Run(ctx, 5*time.Minute, "", argv...)
		if err != nil {
			return "", fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
		}
		if res.Code != 0 {
			return "", fmt.Errorf("%s failed (exit %d): %s", strings.Join(argv, " "), res.Code, res.Combined())
		}
	}
	return dst, nil
}
