package hostsetup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"terok.dev/sandbox/common/atomicfile"
	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/runner/internal/seccomp"
	"terok.dev/sandbox/runner/internal/shield"
)

// dir is one directory setup owns, with its mode.
type dir struct {
	path string
	mode os.FileMode
}

// dirs are the sandbox's directories: state, credentials and runtime
// private to their owner; the config root readable (podman of the same
// user reads the seccomp profile there, and nothing in it is secret).
func (o Options) dirs() []dir {
	c := o.Cfg
	return []dir{
		{c.ConfigDir, 0o755},
		{c.StateDir, 0o700},
		{c.CredentialsDir, 0o700},
		{c.RuntimeDir, 0o700},
		{c.GateBasePath(), 0o700},
	}
}

// missingChain is path and its missing ancestors, outermost first.
func missingChain(path string) []string {
	var chain []string
	for p := filepath.Clean(path); ; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); err == nil {
			break
		}
		chain = append([]string{p}, chain...)
		if filepath.Dir(p) == p {
			break
		}
	}
	return chain
}

func (o Options) dirStep() Step {
	return Step{
		Name: "directories",
		Plan: func(context.Context) ([]string, error) {
			var changes []string
			for _, d := range o.dirs() {
				st, err := os.Lstat(d.path)
				switch {
				case errors.Is(err, os.ErrNotExist):
					changes = append(changes, fmt.Sprintf("create %s (mode %04o)", d.path, d.mode))
				case err != nil:
					return nil, err
				case !st.IsDir():
					return nil, fmt.Errorf("%s exists and is not a directory; move it away, then run the setup again", d.path)
				case st.Mode().Perm() != d.mode:
					changes = append(changes, fmt.Sprintf("chmod %04o %s (is %04o)", d.mode, d.path, st.Mode().Perm()))
				}
			}
			return changes, nil
		},
		Apply: func(context.Context) error {
			for _, d := range o.dirs() {
				if err := o.mkdirRecorded(d.path, d.mode); err != nil {
					return err
				}
				if err := os.Chmod(d.path, d.mode); err != nil {
					return fmt.Errorf("chmod %s: %w", d.path, err)
				}
			}
			return nil
		},
	}
}

// mkdirRecorded creates path (and its missing ancestors) after noting them
// in the record, so uninstall can remove exactly what setup created. The
// config root holds the record, so it is created before the note about
// itself can be written; a kill in that instant leaves it unrecorded (kept
// by uninstall), never the reverse.
func (o Options) mkdirRecorded(path string, mode os.FileMode) error {
	chain := missingChain(path)
	if len(chain) == 0 {
		return nil
	}
	if err := os.MkdirAll(o.Cfg.ConfigDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", o.Cfg.ConfigDir, err)
	}
	if err := o.addRecord(chain); err != nil {
		return err
	}
	if err := os.MkdirAll(path, mode); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	return nil
}

// readRecord is the list of directories setup created.
func (o Options) readRecord() ([]string, error) {
	data, err := os.ReadFile(o.record())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", o.record(), err)
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" && filepath.IsAbs(l) {
			out = append(out, filepath.Clean(l))
		}
	}
	return out, nil
}

func (o Options) addRecord(paths []string) error {
	have, err := o.readRecord()
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, p := range have {
		seen[p] = true
	}
	for _, p := range paths {
		if !seen[p] {
			have = append(have, p)
			seen[p] = true
		}
	}
	return atomicfile.WriteFile(o.record(), []byte(strings.Join(have, "\n")+"\n"), 0o644)
}

// DefaultConfig is the config file setup writes when there is none: every
// key commented out at its default, so the built-in defaults apply and the
// operator sees what can be changed (docs/operations.md, Configure).
func DefaultConfig(c config.Config) []byte {
	var b strings.Builder
	b.WriteString("# terok-sandbox configuration, written by `terok-sandbox setup` (docs/operations.md, Configure).\n")
	b.WriteString("# Every key is commented out at its default; uncomment a line to change it.\n")
	fmt.Fprintf(&b, "# gate_port = %d\n", config.DefaultGatePort)
	fmt.Fprintf(&b, "# proxy_port = %d\n", config.DefaultProxyPort)
	fmt.Fprintf(&b, "# ssh_agent_port = %d\n", config.DefaultSSHAgentPort)
	fmt.Fprintf(&b, "# shield_profiles = [%q]\n", config.DefaultProfile)
	b.WriteString("# shield_audit = true\n")
	b.WriteString("# shield_upstream_dns = \"\"          # \"\": the network mode's forwarder\n")
	b.WriteString("# shield_decide_timeout = \"30s\"     # interactive mode: a held connection waits this long for an answer\n")
	b.WriteString("# proxy_static_marker = false\n")
	b.WriteString("# credentials_encryption = true\n")
	fmt.Fprintf(&b, "# state_dir = %q\n", c.StateDir)
	fmt.Fprintf(&b, "# runtime_dir = %q\n", c.RuntimeDir)
	fmt.Fprintf(&b, "# credentials_dir = %q\n", c.CredentialsDir)
	return []byte(b.String())
}

func (o Options) configPath() string { return filepath.Join(o.Cfg.ConfigDir, config.FileName) }

func (o Options) configStep() Step {
	return Step{
		Name: "config file",
		Plan: func(context.Context) ([]string, error) {
			if _, err := os.Lstat(o.configPath()); err == nil {
				return nil, nil
			} else if !errors.Is(err, os.ErrNotExist) {
				return nil, err
			}
			return []string{"write the default " + o.configPath()}, nil
		},
		Apply: func(context.Context) error {
			if err := o.mkdirRecorded(o.Cfg.ConfigDir, 0o755); err != nil {
				return err
			}
			return createIfMissing(o.configPath(), DefaultConfig(o.Cfg))
		},
	}
}

// hooksDir is where this scope's hook descriptors go.
func (o Options) hooksDir() string {
	if o.Scope == ScopeSystem {
		return o.Paths.RootSetupDir()
	}
	return o.Paths.UserHooksDir()
}

// descriptors are the descriptor files this scope's podman must find, by
// path, naming the installed hook binary.
func (o Options) descriptors() (map[string][]byte, error) {
	if o.HookBinary == "" {
		return nil, errors.New("terok-shield-hook not found next to terok-sandbox, in libexec/terok or on PATH; build or install it first (make build / make install)")
	}
	abs, err := filepath.Abs(o.HookBinary)
	if err != nil {
		return nil, err
	}
	owners := []int{0}
	if o.Scope == ScopeUser && o.Env.EUID != 0 {
		owners = append(owners, o.Env.EUID)
	}
	hook, err := shieldbundle.CheckHookBinary(abs, owners)
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, stage := range []string{shieldbundle.StageCreateRuntime, shieldbundle.StagePoststop} {
		d, err := shieldbundle.Descriptor(stage, hook)
		if err != nil {
			return nil, err
		}
		out[filepath.Join(o.hooksDir(), shieldbundle.DescriptorName(stage))] = d
	}
	return out, nil
}

func containsPath(list []string, p string) bool {
	for _, d := range list {
		if filepath.Clean(d) == filepath.Clean(p) {
			return true
		}
	}
	return false
}

func (o Options) hooksStep() Step {
	return Step{
		Name: "shield hooks",
		Plan: func(context.Context) ([]string, error) {
			want, err := o.descriptors()
			if err != nil {
				return nil, err
			}
			var changes []string
			for _, p := range sortedKeys(want) {
				have, err := os.ReadFile(p)
				if err != nil || !bytes.Equal(have, want[p]) {
					changes = append(changes, "write hook descriptor "+p)
				}
			}
			if o.Scope == ScopeUser && !containsPath(o.Paths.HooksDirs(), o.hooksDir()) {
				changes = append(changes, fmt.Sprintf("add %s to [engine] hooks_dir in %s", o.hooksDir(), o.Paths.UserContainersConf))
			}
			return changes, nil
		},
		Apply: func(ctx context.Context) error {
			if err := o.mkdirRecorded(o.hooksDir(), 0o755); err != nil {
				return err
			}
			if o.Scope == ScopeUser {
				if err := o.mkdirRecorded(filepath.Dir(o.Paths.UserContainersConf), 0o755); err != nil {
					return err
				}
			}
			res, err := shield.Setup(ctx, shield.SetupOptions{
				Root: o.Scope == ScopeSystem, User: o.Scope == ScopeUser,
				HookBinary: o.HookBinary, Paths: o.Paths, EUID: o.Env.EUID, Tools: o.Tools,
			})
			if err != nil {
				return err
			}
			if res.Warning != "" && o.Out != nil {
				fmt.Fprintf(o.Out, "shield hooks: warning: %s\n", res.Warning)
			}
			return nil
		},
	}
}

func sortedKeys(m map[string][]byte) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (o Options) seccompPath() string { return seccomp.Path(o.Cfg.ConfigDir) }

func (o Options) seccompStep() Step {
	return Step{
		Name: "seccomp profile",
		Plan: func(context.Context) ([]string, error) {
			src, err := seccomp.FindPodmanDefault()
			if err != nil {
				return nil, err
			}
			want, err := seccomp.Build(src)
			if err != nil {
				return nil, err
			}
			have, rerr := os.ReadFile(o.seccompPath())
			if rerr == nil && bytes.Equal(have, want) && seccomp.Load(o.seccompPath(), o.Env.EUID) == nil {
				return nil, nil
			}
			return []string{fmt.Sprintf("write %s (generated from %s)", o.seccompPath(), src)}, nil
		},
		Apply: func(context.Context) error {
			src, err := seccomp.FindPodmanDefault()
			if err != nil {
				return err
			}
			if err := o.mkdirRecorded(filepath.Dir(o.seccompPath()), 0o755); err != nil {
				return err
			}
			return seccomp.Install(src, o.seccompPath())
		},
	}
}

// createIfMissing writes data to path (mode 0644) unless a file is there:
// written to a temporary file beside it, then hard-linked into place, which
// fails rather than replaces when the operator wrote the file meanwhile.
// (atomicfile.CreateIfMissing makes the directory private; the config root
// must stay readable.)
func createIfMissing(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".config-*.tmp")
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create %s: %w", path, err)
	}
	return nil
}
