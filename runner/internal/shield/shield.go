// Package shield is the runner side of the egress firewall (shield.md):
// profiles, podman environment detection, the pre-start step that writes
// the per-container state bundle (resolver tier) and returns the podman
// arguments, live operations on a running container (including signalling
// its resolver), the cleanup of what failed starts leave, the audit log,
// global hook setup, the environment check and the runner adapter. The ruleset text and the
// state-bundle contract come from common/ruleset and common/shieldbundle,
// shared with the OCI hook.
package shield

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/runner/internal/podman"
	"terok.dev/sandbox/runner/internal/podmaninfo"
)

// Config is the per-container shield configuration (docs/shield.md, How a launch is protected).
type Config struct {
	StateDir        string
	DefaultProfiles []string
	LoopbackPorts   []int
	AuditEnabled    bool
	// ProfilesDir is the user profile directory ("" → bundled only).
	ProfilesDir string
	// UpstreamDNS is the forwarder the container's resolver uses
	// (shield_upstream_dns); "" → the network mode's own.
	UpstreamDNS string
	// DecideTimeout is how long interactive mode holds a connection for
	// the decider's answer (shield_decide_timeout; "" → the resolver's
	// default), written to decide.timeout.
	DecideTimeout string
	// Mode is the shield mode of the launch (shieldbundle.Mode*; ""
	// is enforce), written to shield.mode and the annotation.
	Mode string
	// Project and Task label the hook's audit records ("" → none).
	Project, Task string
	// TaskEnds is where the hook's poststop records the container's end
	// ("" → nowhere).
	TaskEnds string
}

// mode is the configured mode, "" read as enforce.
func (c Config) mode() string {
	if c.Mode == "" {
		return shieldbundle.ModeEnforce
	}
	return c.Mode
}

// interactive reports whether the launch holds unlisted connections.
func (c Config) interactive() bool { return c.mode() == shieldbundle.ModeInteractive }

// Options are the host facts a Shield works with. Zero values mean "the
// real host": $PATH tools, `podman`, the real containers.conf files.
type Options struct {
	Tools Tools
	// Podman is the podman executable ("" → looked up on the path).
	Podman string
	// Paths are the containers.conf / hooks locations.
	Paths HostPaths
	// HookBinary is the terok-shield-hook executable pre-start links into
	// the state directory.
	HookBinary string
	EUID       int
	Log        *slog.Logger
	// Now is the clock (tests); nil → time.Now.
	Now func() time.Time
	// Info, when set, is used instead of querying podman.
	Info *podmaninfo.Info
	// RunRoot is podman's run root ("" → the default for the uid); tests
	// point it elsewhere.
	RunRoot string
	// HostAddrs, when set, lists the host's own addresses instead of the
	// interfaces of this network namespace (tests).
	HostAddrs func() []string
	// Facts is the runner's host-facts cache (podman version and network
	// mode); its zero value caches nothing.
	Facts podman.InfoCache
}

// Shield operates one container's state directory.
type Shield struct {
	cfg  Config
	opts Options

	infoOnce sync.Once
	info     podmaninfo.Info
}

// New returns a Shield for cfg.
func New(cfg Config, opts Options) *Shield {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Shield{cfg: cfg, opts: opts}
}

// SetupNeededError is the dedicated pre-start failure when the hooks are
// missing (docs/shield.md, Global hooks and `shield setup`).
type SetupNeededError struct{ PodmanVersion string }

func (e *SetupNeededError) Error() string {
	return fmt.Sprintf("Podman %s detected.\n\n%s", e.PodmanVersion, SetupHint)
}

// IsSetupNeeded reports whether err is (or wraps) a SetupNeededError.
func IsSetupNeeded(err error) bool {
	var s *SetupNeededError
	return errors.As(err, &s)
}

// podmanInfo queries podman once per Shield (docs/shield.md, How a launch is protected).
func (s *Shield) podmanInfo(ctx context.Context) podmaninfo.Info {
	s.infoOnce.Do(func() {
		if s.opts.Info != nil {
			s.info = *s.opts.Info
			return
		}
		s.info = s.queryPodman(ctx)
	})
	return s.info
}

func (s *Shield) podmanPath() string {
	if s.opts.Podman != "" {
		return s.opts.Podman
	}
	if p := s.opts.Tools.LookPath("podman", "/usr/bin/podman"); p != "" {
		return p
	}
	return "podman"
}

func (s *Shield) warn(msg string, args ...any) { s.opts.Log.Warn(msg, args...) }

// resolveDir makes dir absolute with every symlink of its existing part
// resolved; the part that does not exist yet is appended unchanged.
func resolveDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	existing, rest := abs, ""
	for {
		if r, err := filepath.EvalSymlinks(existing); err == nil {
			return filepath.Join(r, rest), nil
		}
		parent := filepath.Dir(existing)
		if parent == existing {
			return abs, nil
		}
		rest = filepath.Join(filepath.Base(existing), rest)
		existing = parent
	}
}

// mkdirPrivate creates dir and forces 0700 (umask must not loosen it).
func mkdirPrivate(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.Chmod(dir, 0o700)
}

// NetworkArgs are the podman network arguments for a mode (docs/shield.md, How a launch is protected).
func NetworkArgs(mode string) []string { return podmaninfo.HostLoopbackArgs(mode) }

// rulesetOptions are the table options of a bundle: its forwarder, the
// host-service ports, in pasta mode only the host-loopback address, and
// the terminal rule of its shield mode.
func (s *Shield) rulesetOptions(dns, netMode, shieldMode string) ruleset.Options {
	return ruleset.Options{
		DNS:           dns,
		LoopbackPorts: append([]int(nil), s.cfg.LoopbackPorts...),
		Interactive:   shieldMode == shieldbundle.ModeInteractive,
		Learn:         shieldMode == shieldbundle.ModeLearn,
		HostLoopback:  hostLoopbackFor(netMode),
	}
}

// bundleMode is the shield mode a state directory was launched in:
// shield.mode, or interactive for an older bundle with only the
// interactive marker.
func bundleMode(dir string) (string, error) {
	m, err := shieldbundle.ReadMode(dir)
	if err != nil {
		return "", err
	}
	if m == shieldbundle.ModeEnforce && exists(filepath.Join(dir, shieldbundle.FileInteractive)) {
		return shieldbundle.ModeInteractive, nil
	}
	return m, nil
}

// verifyEnforcing checks a listed table against the enforcing table of
// the bundle's mode; an unreadable mode is an error, never a guess.
func verifyEnforcing(dir, listing string) []string {
	m, err := bundleMode(dir)
	if err != nil {
		return []string{err.Error()}
	}
	if m == shieldbundle.ModeLearn {
		return ruleset.VerifyLearn(listing)
	}
	return ruleset.VerifyHook(listing, m == shieldbundle.ModeInteractive)
}

// writeFile replaces dir/name atomically with mode 0600 and fsync.
func writeFile(dir, name, content string) error {
	return writeBundleFile(filepath.Join(dir, name), []byte(content), 0o600, true)
}

// writeBundleFile replaces path atomically (temp file in the same directory,
// then rename), skipping the write when the file already holds exactly
// data with mode perm (a relaunch of the same task rewrites nothing). Only
// files whose loss in a crash could weaken the firewall are fsynced
// (ruleset.nft: a truncated file that dropped its deny elements would still
// parse). The others, if truncated by a crash, leave the container more
// restricted or not starting at all, and pre-start rewrites them on the
// next launch; each fsync costs about a millisecond here, and a container
// start is budgeted at 10% over plain podman.
func writeBundleFile(path string, data []byte, perm os.FileMode, sync bool) error {
	if st, err := os.Lstat(path); err == nil && st.Mode().IsRegular() && st.Mode().Perm() == perm && st.Size() == int64(len(data)) {
		if old, err := os.ReadFile(path); err == nil && string(old) == string(data) {
			return nil
		}
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Chmod(perm); err != nil {
		return fail(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			return fail(err)
		}
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func removeIfExists(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", p, err)
	}
	return nil
}

// audit appends an event when auditing is on; failures only warn.
func (s *Shield) audit(container, action, dest, detail string) {
	if !s.cfg.AuditEnabled {
		return
	}
	dir, err := resolveDir(s.cfg.StateDir)
	if err != nil {
		dir = s.cfg.StateDir
	}
	ev := shieldbundle.Event{TS: s.opts.Now().UTC().Format("2006-01-02T15:04:05+00:00"), Container: container, Action: action, Dest: dest, Detail: detail}
	if err := shieldbundle.AppendAudit(dir, ev); err != nil {
		s.warn("could not write the shield audit log", "dir", dir, "error", err, "hint", "check that the task directory is writable")
	}
}

// linesOf renders one value per line with a trailing newline ("" for none).
func linesOf(lines []string) []byte {
	if len(lines) == 0 {
		return []byte{}
	}
	return []byte(strings.Join(lines, "\n") + "\n")
}
