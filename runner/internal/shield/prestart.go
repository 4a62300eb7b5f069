package shield

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"terok.dev/sandbox/common/names"
	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/runner/internal/launch"
	"terok.dev/sandbox/runner/internal/podmaninfo"
	"terok.dev/sandbox/runner/internal/profile"
)

// PreStart prepares the state bundle for container and returns the extra
// podman run arguments (docs/shield.md, How a launch is protected).
// profiles nil → the defaults. Each step is one concern; the launch.Mark
// names are the phases TEROK_DEBUG_TIMING prints.
func (s *Shield) PreStart(ctx context.Context, container string, profiles []string) ([]string, error) {
	if profiles == nil {
		profiles = s.cfg.DefaultProfiles
	}
	if err := s.validateLaunch(container, profiles); err != nil {
		return nil, err
	}
	stateDir, err := s.launchStateDir()
	if err != nil {
		return nil, err
	}
	launch.Mark(ctx, "shield: validate, resolve dir")
	info := s.podmanInfo(ctx)
	launch.Mark(ctx, "shield: podman facts")
	hooksDir, err := s.prepareStateDir(stateDir)
	if err != nil {
		return nil, err
	}
	launch.Mark(ctx, "shield: dirs + hook link")
	net, err := s.launchNetwork(info)
	if err != nil {
		return nil, err
	}
	entries, err := profile.Store{UserDir: s.cfg.ProfilesDir}.Compose(profiles)
	if err != nil {
		return nil, err
	}
	launch.Mark(ctx, "shield: profiles")
	if err := writeProfileLists(stateDir, entries); err != nil {
		return nil, err
	}
	if err := s.writeSettingFiles(stateDir, net); err != nil {
		return nil, err
	}
	launch.Mark(ctx, "shield: allowlists, dns files")
	script, err := s.bundleRuleset(stateDir, net.mode, net.dns)
	if err != nil {
		return nil, err
	}
	// Atomic (temp + rename), not fsynced: the digest annotation makes the
	// hook refuse a crash-truncated file instead (docs/shield-hook.md,
	// Ruleset digest).
	if err := writeBundleFile(filepath.Join(stateDir, shieldbundle.FileRuleset), []byte(script), 0o600, false); err != nil {
		return nil, err
	}
	if err := s.writeModeFiles(stateDir); err != nil {
		return nil, err
	}
	launch.Mark(ctx, "shield: render ruleset")
	resolvConf, err := writeResolverFiles(stateDir)
	if err != nil {
		return nil, err
	}
	launch.Mark(ctx, "shield: resolver files")
	hooks, err := s.hooksArgs(container, info, hooksDir)
	if err != nil {
		return nil, err
	}
	args := s.podmanArgs(launchArgs{container: container, profiles: profiles, stateDir: stateDir, resolvConf: resolvConf, net: net, hooks: hooks,
		rulesetDigest: shieldbundle.RulesetDigest([]byte(script))})
	launch.Mark(ctx, "shield: args, hooks check")
	s.auditLaunch(container, profiles)
	return args, nil
}

// validateLaunch refuses a launch whose container name, profile names or
// configuration could not be carried safely into the bundle and the
// annotations, before anything is written.
func (s *Shield) validateLaunch(container string, profiles []string) error {
	if err := names.ValidateContainerName(container); err != nil {
		return err
	}
	for _, p := range profiles {
		if !profile.ValidName(p) {
			return specErrorf("Unsafe name: '%s'", p)
		}
	}
	return s.cfg.validate()
}

// validate checks the per-launch settings of the configuration: the
// shield mode, the decide timeout, the audit labels and the loopback ports.
func (c Config) validate() error {
	if _, err := shieldbundle.ParseMode(c.Mode); err != nil {
		return err
	}
	if _, err := shieldbundle.ParseDecideTimeout(c.DecideTimeout); err != nil {
		return err
	}
	if c.Project != "" {
		if err := names.ValidateProjectID(c.Project); err != nil {
			return err
		}
	}
	if c.Task != "" {
		if err := names.ValidateTaskID(c.Task); err != nil {
			return err
		}
	}
	for _, port := range c.LoopbackPorts {
		if port < 1 || port > 65535 {
			return fmt.Errorf("loopback port %d out of range 1..65535", port)
		}
	}
	return nil
}

// launchStateDir is the configured state directory made absolute with its
// symlinks resolved; it must fit in an annotation value.
func (s *Shield) launchStateDir() (string, error) {
	stateDir, err := resolveDir(s.cfg.StateDir)
	if err != nil {
		return "", fmt.Errorf("resolve shield state directory %s: %w", s.cfg.StateDir, err)
	}
	if strings.ContainsAny(stateDir, ",\n\r\x00") {
		return "", fmt.Errorf("shield state directory %q contains a comma or control character, which podman annotations cannot carry; use another task directory", stateDir)
	}
	return stateDir, nil
}

// prepareStateDir creates the state directory and its hooks directory
// (0700) and installs the per-container hook files; it returns the hooks
// directory.
func (s *Shield) prepareStateDir(stateDir string) (string, error) {
	hooksDir := filepath.Join(stateDir, shieldbundle.HooksSubdir)
	for _, d := range []string{stateDir, hooksDir} {
		if err := mkdirPrivate(d); err != nil {
			return "", fmt.Errorf("create shield state directory %s: %w (fix permissions for uid=%d gid=%d)", d, err, os.Geteuid(), os.Getegid())
		}
	}
	if err := s.installLocalHook(stateDir, hooksDir); err != nil {
		return "", err
	}
	return hooksDir, nil
}

// launchNet is the network of one launch: podman's network mode, the
// forwarder of the container's resolver and the DNS tier.
type launchNet struct {
	mode, dns, tier string
}

// launchNetwork is the launch's network mode and upstream DNS. The tier is
// always the resolver: it needs only the hook binary, which
// prepareStateDir already required.
func (s *Shield) launchNetwork(info podmaninfo.Info) (launchNet, error) {
	mode, dns, err := s.modeFor(info)
	if err != nil {
		return launchNet{}, err
	}
	return launchNet{mode: mode, dns: dns, tier: TierResolver}, nil
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

// writeSettingFiles writes the launch settings the hook and the live
// operations read back: upstream.dns, dns.tier, network.mode and
// shield.mode.
func (s *Shield) writeSettingFiles(stateDir string, net launchNet) error {
	for _, f := range [][2]string{{shieldbundle.FileUpstreamDNS, net.dns}, {shieldbundle.FileDNSTier, net.tier}, {fileNetworkMode, net.mode}, {shieldbundle.FileMode, s.cfg.mode()}} {
		if err := writeBundleFile(filepath.Join(stateDir, f[0]), []byte(f[1]+"\n"), 0o600, false); err != nil {
			return err
		}
	}
	return nil
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

// writeModeFiles writes the interactive marker and decide.timeout, or
// removes them for another mode. decide.timeout exists only when
// interactive and configured: the resolver reads it at start
// (docs/shield-resolver.md, Interactive approval).
func (s *Shield) writeModeFiles(stateDir string) error {
	var err error
	if s.cfg.interactive() {
		err = writeFile(stateDir, shieldbundle.FileInteractive, "nflog\n")
	} else {
		err = removeIfExists(filepath.Join(stateDir, shieldbundle.FileInteractive))
	}
	if err != nil {
		return err
	}
	if s.cfg.interactive() && s.cfg.DecideTimeout != "" {
		return writeBundleFile(filepath.Join(stateDir, shieldbundle.FileDecideTimeout), []byte(s.cfg.DecideTimeout+"\n"), 0o600, false)
	}
	return removeIfExists(filepath.Join(stateDir, shieldbundle.FileDecideTimeout))
}

// staleLaunchFiles are what pre-start removes of an older launch: the
// dnsmasq configuration and log of an old bundle (the hook would start a
// dnsmasq for a dnsmasq.conf), a resolver.open of a `shield down` (a new
// launch starts with closed DNS, like its enforcing ruleset) and the
// marker of a `shield quarantine` of the previous container (a new launch
// is the operator's explicit choice; docs/shield.md, Quarantine) and the
// ruleset.nft.sha256 of a live change of the previous container (the new
// one carries its own digest annotation).
// dnsmasq.pid stays: if it names a live dnsmasq of this directory, that
// one leaked from an old launch, and only the file lets Cleanup and
// `shield check` find and stop it (pre-start runs before podman refuses a
// name in use, so it must not stop anything itself).
var staleLaunchFiles = [...]string{shieldbundle.FileDnsmasqConf, shieldbundle.FileDnsmasqLog, shieldbundle.FileResolverOpen, shieldbundle.FileQuarantine, shieldbundle.FileRulesetDigest}

// writeResolverFiles writes resolv.conf and removes the staleLaunchFiles;
// it returns the path of resolv.conf. World-readable: it is bind-mounted
// over /etc/resolv.conf, which every user inside the container must be
// able to read.
func writeResolverFiles(stateDir string) (string, error) {
	rc := filepath.Join(stateDir, shieldbundle.FileResolvConf)
	if err := writeBundleFile(rc, []byte(shieldbundle.ResolvConf), 0o644, false); err != nil {
		return "", err
	}
	for _, f := range staleLaunchFiles {
		if err := removeIfExists(filepath.Join(stateDir, f)); err != nil {
			return "", err
		}
	}
	return rc, nil
}

// hooksArgs is how podman finds the hooks: per-container hooks never
// persist across a restart, so the global ones must exist
// (docs/shield.md, Global hooks and `shield setup`).
func (s *Shield) hooksArgs(container string, info podmaninfo.Info, hooksDir string) ([]string, error) {
	if !info.Version.Less(hooksPersistFrom) {
		return []string{"--hooks-dir", hooksDir}, nil
	}
	if dir := s.opts.Paths.GlobalHookDir(); dir != "" {
		s.audit(container, "setup", "", fmt.Sprintf("podman %s: using global hooks dir (--hooks-dir does not persist on restart)", info.Version))
		return nil, nil
	}
	return nil, &SetupNeededError{PodmanVersion: info.Version.String()}
}

// launchArgs is what the podman arguments of a launch are made of.
type launchArgs struct {
	container  string
	profiles   []string
	stateDir   string
	resolvConf string
	net        launchNet
	hooks      []string // from hooksArgs
	// rulesetDigest is shieldbundle.RulesetDigest of the ruleset.nft
	// written for this launch.
	rulesetDigest string
}

// capDrops are the capabilities a shielded container must not have: with
// them it could change its own firewall.
var capDrops = [...]string{"--cap-drop", "NET_ADMIN", "--cap-drop", "NET_RAW"}

// podmanArgs are the extra podman run arguments, in the order
// docs/shield.md, How a launch is protected lists them: network, the
// resolv.conf mount, the annotations, the hooks and the capability drops.
func (s *Shield) podmanArgs(l launchArgs) []string {
	args := append([]string(nil), NetworkArgs(l.net.mode)...)
	args = append(args, "--volume", l.resolvConf+":/etc/resolv.conf:ro,Z")
	for _, kv := range [][2]string{
		{shieldbundle.AnnProfiles, strings.Join(l.profiles, ":")},
		{shieldbundle.AnnName, l.container},
		{shieldbundle.AnnStateDir, l.stateDir},
		{shieldbundle.AnnLoopbackPorts, joinPorts(s.cfg.LoopbackPorts)},
		{shieldbundle.AnnVersion, strconv.Itoa(shieldbundle.BundleVersion)},
		{shieldbundle.AnnAuditEnabled, strconv.FormatBool(s.cfg.AuditEnabled)},
		{shieldbundle.AnnUpstreamDNS, l.net.dns},
		{shieldbundle.AnnDNSTier, l.net.tier},
		{shieldbundle.AnnInteractive, strconv.FormatBool(s.cfg.interactive())},
		{shieldbundle.AnnMode, s.cfg.mode()},
		{shieldbundle.AnnRulesetDigest, l.rulesetDigest},
	} {
		args = append(args, "--annotation", kv[0]+"="+kv[1])
	}
	for _, kv := range [][2]string{{shieldbundle.AnnProject, s.cfg.Project}, {shieldbundle.AnnTask, s.cfg.Task}, {shieldbundle.AnnTaskEnds, s.cfg.TaskEnds}} {
		if kv[1] != "" {
			args = append(args, "--annotation", kv[0]+"="+kv[1])
		}
	}
	args = append(args, l.hooks...)
	return append(args, capDrops[:]...)
}

// auditLaunch records the launch's profiles and, unless enforcing, its
// mode.
func (s *Shield) auditLaunch(container string, profiles []string) {
	s.audit(container, "setup", "", "profiles="+strings.Join(profiles, ","))
	if m := s.cfg.mode(); m != shieldbundle.ModeEnforce {
		s.audit(container, "mode", "", m)
	}
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
