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
	"strconv"
	"strings"
	"sync"
	"time"

	"terok.dev/sandbox/common/names"
	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/runner/internal/launch"
	"terok.dev/sandbox/runner/internal/podman"
	"terok.dev/sandbox/runner/internal/podmaninfo"
	"terok.dev/sandbox/runner/internal/profile"
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

// modeFor returns the network mode and the upstream DNS forwarder: the
// configured shield_upstream_dns, else the mode's user-mode forwarder. Root always gets slirp4netns with host loopback: the
// decision that makes rootful containers reach the host's loopback-bound
// services exactly like rootless ones (docs/shield.md).
func (s *Shield) modeFor(info podmaninfo.Info) (mode, dns string, err error) {
	if s.opts.EUID == 0 {
		mode = podmaninfo.Slirp4netns
	} else {
		mode = info.NetworkMode()
	}
	switch mode {
	case podmaninfo.Slirp4netns:
		dns = ruleset.SlirpDNS
	case podmaninfo.Pasta:
		dns = ruleset.PastaDNS
	default:
		return "", "", fmt.Errorf("unsupported podman network mode %q", mode)
	}
	if s.cfg.UpstreamDNS != "" {
		c, err := ruleset.CanonicalIP(s.cfg.UpstreamDNS)
		if err != nil || strings.Contains(c, "/") {
			return "", "", fmt.Errorf("shield_upstream_dns %q is not a single IP address", s.cfg.UpstreamDNS)
		}
		dns = c
	}
	return mode, dns, nil
}

// NetworkArgs are the podman network arguments for a mode (docs/shield.md, How a launch is protected).
func NetworkArgs(mode string) []string { return podmaninfo.HostLoopbackArgs(mode) }

// PreStart prepares the state bundle for container and returns the extra
// podman run arguments (docs/shield.md, How a launch is protected). profiles nil → the defaults.
func (s *Shield) PreStart(ctx context.Context, container string, profiles []string) ([]string, error) {
	if profiles == nil {
		profiles = s.cfg.DefaultProfiles
	}
	if err := names.ValidateContainerName(container); err != nil {
		return nil, err
	}
	for _, p := range profiles {
		if !profile.ValidName(p) {
			return nil, specErrorf("Unsafe name: '%s'", p)
		}
	}
	if _, err := shieldbundle.ParseMode(s.cfg.Mode); err != nil {
		return nil, err
	}
	if _, err := shieldbundle.ParseDecideTimeout(s.cfg.DecideTimeout); err != nil {
		return nil, err
	}
	if s.cfg.Project != "" {
		if err := names.ValidateProjectID(s.cfg.Project); err != nil {
			return nil, err
		}
	}
	if s.cfg.Task != "" {
		if err := names.ValidateTaskID(s.cfg.Task); err != nil {
			return nil, err
		}
	}
	for _, port := range s.cfg.LoopbackPorts {
		if port < 1 || port > 65535 {
			return nil, fmt.Errorf("loopback port %d out of range 1..65535", port)
		}
	}
	// 1. State directory: absolute, symlinks resolved.
	stateDir, err := resolveDir(s.cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("resolve shield state directory %s: %w", s.cfg.StateDir, err)
	}
	if strings.ContainsAny(stateDir, ",\n\r\x00") {
		return nil, fmt.Errorf("shield state directory %q contains a comma or control character, which podman annotations cannot carry; use another task directory", stateDir)
	}
	launch.Mark(ctx, "shield: validate, resolve dir")
	// 2. Podman.
	info := s.podmanInfo(ctx)
	launch.Mark(ctx, "shield: podman facts")
	// 3. Directories.
	hooksDir := filepath.Join(stateDir, shieldbundle.HooksSubdir)
	for _, d := range []string{stateDir, hooksDir} {
		if err := mkdirPrivate(d); err != nil {
			return nil, fmt.Errorf("create shield state directory %s: %w (fix permissions for uid=%d gid=%d)", d, err, os.Geteuid(), os.Getegid())
		}
	}
	// 4. Per-container hook files.
	if err := s.installLocalHook(stateDir, hooksDir); err != nil {
		return nil, err
	}
	launch.Mark(ctx, "shield: dirs + hook link")
	// 5. Network mode and upstream DNS. The tier is always the resolver:
	// it needs only the hook binary, which step 4 already required.
	tier := TierResolver
	mode, dns, err := s.modeFor(info)
	if err != nil {
		return nil, err
	}
	// 6. Profiles.
	entries, err := profile.Store{UserDir: s.cfg.ProfilesDir}.Compose(profiles)
	if err != nil {
		return nil, err
	}
	launch.Mark(ctx, "shield: profiles")
	// 7. Allowlists: explicit addresses and domains, nothing resolved here.
	if err := writeProfileLists(stateDir, entries); err != nil {
		return nil, err
	}
	// 8. upstream.dns, dns.tier, network.mode, shield.mode.
	for _, f := range [][2]string{{shieldbundle.FileUpstreamDNS, dns}, {shieldbundle.FileDNSTier, tier}, {fileNetworkMode, mode}, {shieldbundle.FileMode, s.cfg.mode()}} {
		if err := writeBundleFile(filepath.Join(stateDir, f[0]), []byte(f[1]+"\n"), 0o600, false); err != nil {
			return nil, err
		}
	}
	launch.Mark(ctx, "shield: allowlists, dns files")
	// 9. ruleset.nft and the interactive marker.
	script, err := s.bundleRuleset(stateDir, mode, dns)
	if err != nil {
		return nil, err
	}
	// ruleset.nft is the one fsynced file; the fsync waits ~1 ms for the
	// journal, so it runs while steps 10-14 write the rest. PreStart owns
	// the goroutine and returns only after it ended: podman (and so the
	// hook) never starts before ruleset.nft is durably in place.
	rulesetDone := make(chan error, 1)
	go func() { rulesetDone <- writeFile(stateDir, shieldbundle.FileRuleset, script) }()
	rulesetWritten := false
	waitRuleset := func() error {
		if rulesetWritten {
			return nil
		}
		rulesetWritten = true
		return <-rulesetDone
	}
	defer func() { _ = waitRuleset() }() // error paths: only join
	if s.cfg.interactive() {
		err = writeFile(stateDir, shieldbundle.FileInteractive, "nflog\n")
	} else {
		err = removeIfExists(filepath.Join(stateDir, shieldbundle.FileInteractive))
	}
	if err != nil {
		return nil, err
	}
	// decide.timeout only when interactive and configured: the resolver
	// reads it at start (docs/shield-resolver.md, Interactive approval).
	if s.cfg.interactive() && s.cfg.DecideTimeout != "" {
		err = writeBundleFile(filepath.Join(stateDir, shieldbundle.FileDecideTimeout), []byte(s.cfg.DecideTimeout+"\n"), 0o600, false)
	} else {
		err = removeIfExists(filepath.Join(stateDir, shieldbundle.FileDecideTimeout))
	}
	if err != nil {
		return nil, err
	}
	launch.Mark(ctx, "shield: render ruleset")
	// 10. resolv.conf, and nothing left of an older launch: the dnsmasq
	// configuration and log of an old bundle (the hook would start a
	// dnsmasq for a dnsmasq.conf), a resolver.open of a `shield down`
	// (a new launch starts with closed DNS, like its enforcing ruleset)
	// and the marker of a `shield quarantine` of the previous container
	// (a new launch is the operator's explicit choice; docs/shield.md,
	// Quarantine).
	// dnsmasq.pid stays: if it names a live dnsmasq of this directory, that
	// one leaked from an old launch, and only the file lets Cleanup and
	// `shield check` find and stop it (pre-start runs before podman
	// refuses a name in use, so it must not stop anything itself).
	// World-readable: it is bind-mounted over /etc/resolv.conf, which
	// every user inside the container must be able to read.
	rc := filepath.Join(stateDir, shieldbundle.FileResolvConf)
	if err := writeBundleFile(rc, []byte(shieldbundle.ResolvConf), 0o644, false); err != nil {
		return nil, err
	}
	for _, f := range []string{shieldbundle.FileDnsmasqConf, shieldbundle.FileDnsmasqLog, shieldbundle.FileResolverOpen, shieldbundle.FileQuarantine} {
		if err := removeIfExists(filepath.Join(stateDir, f)); err != nil {
			return nil, err
		}
	}
	launch.Mark(ctx, "shield: resolver files")
	// 11. Podman arguments.
	args := append([]string(nil), NetworkArgs(mode)...)
	args = append(args, "--volume", rc+":/etc/resolv.conf:ro,Z")
	for _, kv := range [][2]string{
		{shieldbundle.AnnProfiles, strings.Join(profiles, ":")},
		{shieldbundle.AnnName, container},
		{shieldbundle.AnnStateDir, stateDir},
		{shieldbundle.AnnLoopbackPorts, joinPorts(s.cfg.LoopbackPorts)},
		{shieldbundle.AnnVersion, strconv.Itoa(shieldbundle.BundleVersion)},
		{shieldbundle.AnnAuditEnabled, strconv.FormatBool(s.cfg.AuditEnabled)},
		{shieldbundle.AnnUpstreamDNS, dns},
		{shieldbundle.AnnDNSTier, tier},
		{shieldbundle.AnnInteractive, strconv.FormatBool(s.cfg.interactive())},
		{shieldbundle.AnnMode, s.cfg.mode()},
	} {
		args = append(args, "--annotation", kv[0]+"="+kv[1])
	}
	for _, kv := range [][2]string{{shieldbundle.AnnProject, s.cfg.Project}, {shieldbundle.AnnTask, s.cfg.Task}, {shieldbundle.AnnTaskEnds, s.cfg.TaskEnds}} {
		if kv[1] != "" {
			args = append(args, "--annotation", kv[0]+"="+kv[1])
		}
	}
	// 12. Hooks: per-container hooks never persist, so global ones must exist.
	if !info.Version.Less(hooksPersistFrom) {
		args = append(args, "--hooks-dir", hooksDir)
	} else if dir := s.opts.Paths.GlobalHookDir(); dir != "" {
		s.audit(container, "setup", "", fmt.Sprintf("podman %s: using global hooks dir (--hooks-dir does not persist on restart)", info.Version))
	} else {
		return nil, &SetupNeededError{PodmanVersion: info.Version.String()}
	}
	// 13. Capability drops.
	args = append(args, "--cap-drop", "NET_ADMIN", "--cap-drop", "NET_RAW")
	if err := waitRuleset(); err != nil {
		return nil, err
	}
	launch.Mark(ctx, "shield: args, hooks check, ruleset.nft durable")
	// 14. Audit.
	s.audit(container, "setup", "", "profiles="+strings.Join(profiles, ","))
	if m := s.cfg.mode(); m != shieldbundle.ModeEnforce {
		s.audit(container, "mode", "", m)
	}
	return args, nil
}

// bundleRuleset renders ruleset.nft: table, explicit allowlist, deny list
// and (slirp4netns) the fixed gateway elements. Nothing learned: the dns
// sets start empty and fill as the container's resolver answers.
func (s *Shield) bundleRuleset(stateDir, mode, dns string) (string, error) {
	allow, err := shieldbundle.EffectiveAllowlist(stateDir)
	if err != nil {
		return "", fmt.Errorf("read allowlists: %w", err)
	}
	deny, err := shieldbundle.ReadIPFile(filepath.Join(stateDir, shieldbundle.FileDenyList))
	if err != nil {
		return "", fmt.Errorf("read deny list: %w", err)
	}
	sc := ruleset.Script{
		Options: s.rulesetOptions(dns, mode, s.cfg.mode()),
		Allow:   allow,
		Deny:    s.withHostDeny(deny, allow),
	}
	if mode == podmaninfo.Slirp4netns {
		sc.Gateways = ruleset.SlirpGateways()
	}
	text, skipped, err := sc.Render()
	if err != nil {
		return "", fmt.Errorf("render ruleset: %w", err)
	}
	for _, sk := range skipped {
		s.warn("skipping invalid address in the allow/deny lists", "entry", truncate(sk, 80), "dir", stateDir)
	}
	return text, nil
}

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

// installLocalHook links the hook executable into the state directory and
// writes the per-container descriptors (docs/shield.md, How a launch is protected). A symlink keeps the
// launch cheap; the spec allows a copy or a link.
func (s *Shield) installLocalHook(stateDir, hooksDir string) error {
	src := s.opts.HookBinary
	if src == "" {
		return errors.New("terok-shield-hook not found next to terok-sandbox or on PATH; install it (make install) so the shield can protect the container")
	}
	src, err := filepath.Abs(src)
	if err != nil {
		return err
	}
	dst := filepath.Join(stateDir, shieldbundle.HookBinary)
	tmp := dst + ".tmp"
	if cur, err := os.Readlink(dst); err == nil && cur == src {
		tmp = ""
	} else {
		_ = os.Remove(tmp)
	}
	if tmp == "" {
		// Already linked.
	} else if err := os.Symlink(src, tmp); err != nil {
		return fmt.Errorf("link hook executable into %s: %w", stateDir, err)
	}
	if tmp != "" {
		if err := os.Rename(tmp, dst); err != nil {
			_ = os.Remove(tmp)
			return fmt.Errorf("link hook executable into %s: %w", stateDir, err)
		}
	}
	for _, stage := range []string{"createRuntime", "poststop"} {
		desc, err := shieldbundle.Descriptor(stage, dst)
		if err != nil {
			return fmt.Errorf("render %s hook descriptor: %w", stage, err)
		}
		if err := writeBundleFile(filepath.Join(hooksDir, "terok-shield-"+stage+".json"), desc, 0o600, false); err != nil {
			return fmt.Errorf("write %s hook descriptor: %w", stage, err)
		}
	}
	return nil
}

func joinPorts(ports []int) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ":")
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
