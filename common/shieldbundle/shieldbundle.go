// Package shieldbundle is the contract of the per-container shield state
// directory (docs/formats.md, Shield state directory and Bundle version): file names, bundle version,
// annotation keys, the line-file reading and writing rules, the effective
// allowlist and domain list, the audit log, the OCI hook descriptors and the
// per-container dnsmasq configuration. The runner's pre-start and live
// operations write the bundle; the terok-shield-hook OCI hook reads it.
package shieldbundle

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"terok.dev/sandbox/common/ruleset"
)

// BundleVersion is the version of the state-directory contract. Pre-start
// writes it into the terok.shield.version annotation; the hook refuses a
// createRuntime with any other value. Bump it in one place when a file name,
// file format or annotation meaning changes incompatibly.
const BundleVersion = 5

// File names inside the state directory (docs/formats.md, Shield state directory).
const (
	FileRuleset        = "ruleset.nft"
	FileProfileAllowed = "profile.allowed"
	FileProfileDomains = "profile.domains"
	FileLiveAllowed    = "live.allowed"
	FileLiveDomains    = "live.domains"
	FileDenyList       = "deny.list"
	FileDeniedDomains  = "denied.domains"
	FileUpstreamDNS    = "upstream.dns"
	FileDNSTier        = "dns.tier"
	FileInteractive    = "interactive"
	// FileMode holds the shield mode of the launch (ModeEnforce,
	// ModeLearn, ModeInteractive); missing means enforce (bundles of
	// older runners).
	FileMode        = "shield.mode"
	FileDnsmasqConf = "dnsmasq.conf"
	FileDnsmasqPID  = "dnsmasq.pid"
	FileDnsmasqLog  = "dnsmasq.log"
	FileResolvConf  = "resolv.conf"
	// The per-container resolver (tier "resolver", docs/shield-hook.md):
	// its PID (written by the hook that started it), its bounded log of
	// refused names, and the marker that makes it forward every name
	// while the shield is down.
	FileResolverPID = "resolver.pid"
	// FileResolverReady is the resolver's own report of its start
	// (ReadResolverReady): written once it serves, or when it gives up.
	FileResolverReady = "resolver.ready"
	FileDNSLog        = "dns.log"
	FileResolverOpen  = "resolver.open"
	FileGateway       = "gateway"
	FileGatewayV6     = "gateway_v6"
	FileContainerID   = "container.id"
	FileHookErrorLog  = "hook-error.log"
	FileAudit         = "audit.jsonl"
	// FileQuarantine is the marker of `shield quarantine` (docs/shield.md,
	// Quarantine): while it exists the hook applies the quarantine table
	// instead of ruleset.nft, so a restart of the container stays
	// quarantined; `shield up`/`down` remove it, a new launch too.
	FileQuarantine = "quarantine"
	// FileRulesetDigest holds RulesetDigest of a ruleset.nft that a live
	// allow/deny rewrote after the launch (fsynced, like that ruleset.nft):
	// the hook accepts a ruleset.nft whose digest is the launch's
	// annotation or this one (docs/shield-hook.md, Ruleset digest). A new
	// launch removes it.
	FileRulesetDigest = "ruleset.nft.sha256"

	HookBinary        = "terok-shield-hook"
	HooksSubdir       = "hooks"
	DescCreateRuntime = "terok-shield-createRuntime.json"
	DescPoststop      = "terok-shield-poststop.json"

	// lockFile serialises read-modify-write of the line files.
	lockFile = ".bundle.lock"
)

// Annotation keys (docs/shield-hook.md, Invocation).
const (
	AnnProfiles      = "terok.shield.profiles"
	AnnName          = "terok.shield.name"
	AnnStateDir      = "terok.shield.state_dir"
	AnnLoopbackPorts = "terok.shield.loopback_ports"
	AnnVersion       = "terok.shield.version"
	AnnAuditEnabled  = "terok.shield.audit_enabled"
	AnnUpstreamDNS   = "terok.shield.upstream_dns"
	AnnDNSTier       = "terok.shield.dns_tier"
	AnnInteractive   = "terok.shield.interactive"
	AnnMode          = "terok.shield.mode"
	// AnnProject and AnnTask carry the launch's project and task ids
	// (when set) to the hook, which writes them into its audit records.
	AnnProject = "terok.shield.project"
	AnnTask    = "terok.shield.task"
	// AnnTaskEnds is the task-ends directory where poststop records the
	// container's end (common/taskend; docs/security-model.md, Tokens that
	// die with their task). Optional: absent, poststop records nothing.
	AnnTaskEnds = "terok.shield.task_ends"
	// AnnRulesetDigest is RulesetDigest of the ruleset.nft pre-start
	// wrote for the launch; podman keeps it in the container's
	// configuration, so every later start carries it (docs/shield-hook.md,
	// Ruleset digest). Optional: absent (older runners, terok-shield 0.6.5),
	// the hook checks no digest.
	AnnRulesetDigest = "terok.shield.ruleset_digest"
)

// rulesetDigestPrefix starts every RulesetDigest.
const rulesetDigestPrefix = "sha256:"

// RulesetDigest is the digest of the exact bytes of a ruleset.nft:
// "sha256:" and 64 lower-case hex digits.
func RulesetDigest(data []byte) string {
	sum := sha256.Sum256(data)
	return rulesetDigestPrefix + hex.EncodeToString(sum[:])
}

// ParseRulesetDigest checks that s is a RulesetDigest ("sha256:" and 64
// lower-case hex digits) and returns it.
func ParseRulesetDigest(s string) (string, error) {
	h, ok := strings.CutPrefix(s, rulesetDigestPrefix)
	if !ok || len(h) != 2*sha256.Size || strings.Trim(h, "0123456789abcdef") != "" {
		return "", fmt.Errorf("ruleset digest %q is not sha256: and 64 lower-case hex digits", truncateForMsg(s))
	}
	return s, nil
}

// DNS tiers (docs/shield.md, DNS: the per-container resolver).
const (
	// TierResolver is the default: the hook's own per-container resolver
	// forwards only allowlisted names and learns their addresses.
	TierResolver = "resolver"
	// TierDnsmasq is read for bundles written by older tools only; this
	// runner never writes it.
	TierDnsmasq = "dnsmasq"
	TierDig     = "dig"
	TierGetent  = "getent"
)

// Shield modes (docs/shield.md, Shield modes): what the terminal rule
// of the enforcing ruleset does with a new connection to a destination no
// list names.
const (
	// ModeEnforce refuses it (the default).
	ModeEnforce = "enforce"
	// ModeLearn lets a public destination through and records it; the
	// special ranges, the host and closed DNS stay refused.
	ModeLearn = "learn"
	// ModeInteractive holds it for the operator's decision.
	ModeInteractive = "interactive"
)

// ParseMode validates a shield mode; "" is ModeEnforce.
func ParseMode(s string) (string, error) {
	switch s {
	case "", ModeEnforce:
		return ModeEnforce, nil
	case ModeLearn, ModeInteractive:
		return s, nil
	}
	return "", fmt.Errorf("unknown shield mode '%s' (want %s, %s or %s)", s, ModeEnforce, ModeLearn, ModeInteractive)
}

// ReadMode returns the shield mode recorded in stateDir: ModeEnforce when
// shield.mode is missing, an error for an unknown value (the hook must
// not guess which ruleset an operator asked for).
func ReadMode(stateDir string) (string, error) {
	v, err := ReadValue(filepath.Join(stateDir, FileMode))
	if err != nil {
		return "", err
	}
	m, err := ParseMode(v)
	if err != nil {
		return "", fmt.Errorf("%s: %w", FileMode, err)
	}
	return m, nil
}

// Hook stages.
const (
	StageCreateRuntime = "createRuntime"
	StagePoststop      = "poststop"
)

// ResolvConf is the content of resolv.conf in the dnsmasq tier. It is
// bind-mounted over the container's /etc/resolv.conf, so write it 0644: the
// container's unprivileged user must be able to read it.
const ResolvConf = "nameserver 127.0.0.1\noptions ndots:0\n"

// InteractiveMarker is the content of the interactive marker file.
const InteractiveMarker = "nflog\n"

// maxLineFile bounds what is read from a line file: allowlists of a few
// hundred thousand entries fit, a runaway file does not exhaust memory.
const maxLineFile = 64 << 20

// ReadLines returns the trimmed, non-empty lines of path. A missing file is
// an empty list, not an error.
func ReadLines(path string) ([]string, error) {
	data, err := readBounded(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out, nil
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var buf bytes.Buffer
	n, err := buf.ReadFrom(io.LimitReader(f, maxLineFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if n > maxLineFile {
		return nil, fmt.Errorf("read %s: larger than %d bytes", path, maxLineFile)
	}
	return buf.Bytes(), nil
}

// ReadIPFile reads an IP line file: values in canonical form, duplicates
// collapsed (first wins), invalid lines skipped. Missing file → nil.
func ReadIPFile(path string) ([]string, error) { return ReadIPFileWarn(path, nil) }

// ReadIPFileWarn is ReadIPFile reporting each invalid line to warn.
func ReadIPFileWarn(path string, warn func(string)) ([]string, error) {
	return readCanonical(path, warn, ruleset.CanonicalIP)
}

// ReadDomainFile reads a domain line file: each line validated and
// lowercased, invalid lines skipped with a warning, duplicates collapsed.
func ReadDomainFile(path string, warn func(string)) ([]string, error) {
	return readCanonical(path, warn, func(l string) (string, error) {
		d, ok := ruleset.ValidDomain(l)
		if !ok {
			return "", fmt.Errorf("invalid domain '%s'", l)
		}
		return d, nil
	})
}

// readCanonical reads a line file as canonical turns each line into its
// canonical form: lines it refuses skipped and reported to warn ("PATH:
// skipping ERROR"; warn may be nil), duplicates collapsed, the order kept.
func readCanonical(path string, warn func(string), canonical func(string) (string, error)) ([]string, error) {
	lines, err := ReadLines(path)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []string
	for _, l := range lines {
		c, err := canonical(l)
		if err != nil {
			if warn != nil {
				warn(fmt.Sprintf("%s: skipping %v", path, err))
			}
			continue
		}
		if !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	return out, nil
}

// ReadValue returns the first non-empty trimmed line of a one-value file
// (upstream.dns, dns.tier, gateway…); "" when the file is missing or empty.
func ReadValue(path string) (string, error) {
	lines, err := ReadLines(path)
	if err != nil || len(lines) == 0 {
		return "", err
	}
	return lines[0], nil
}

// ReadUpstreamDNS returns the validated upstream forwarder of stateDir;
// "" when upstream.dns is missing.
func ReadUpstreamDNS(stateDir string) (string, error) {
	v, err := ReadValue(filepath.Join(stateDir, FileUpstreamDNS))
	if err != nil || v == "" {
		return "", err
	}
	c, err := ruleset.CanonicalIP(v)
	if err != nil || strings.Contains(c, "/") {
		return "", fmt.Errorf("%s: Invalid IP/CIDR: '%s'", FileUpstreamDNS, v)
	}
	return c, nil
}

// ReadTier returns the DNS tier recorded in stateDir; "" when missing.
func ReadTier(stateDir string) (string, error) {
	v, err := ReadValue(filepath.Join(stateDir, FileDNSTier))
	if err != nil || v == "" {
		return "", err
	}
	switch v {
	case TierResolver, TierDnsmasq, TierDig, TierGetent:
		return v, nil
	}
	return "", fmt.Errorf("%s: unknown DNS tier '%s'", FileDNSTier, v)
}

// ReadPIDFile parses a decimal PID file (whitespace trimmed).
func ReadPIDFile(path string) (int, error) {
	v, err := ReadValue(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(v)
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("%s: not a PID: '%s'", path, v)
	}
	return pid, nil
}

// union returns base ∪ extra − minus, order base then extra, first wins.
func union(lists ...[]string) []string {
	seen := map[string]bool{}
	var out []string
	for _, l := range lists {
		for _, v := range l {
			if !seen[v] {
				seen[v] = true
				out = append(out, v)
			}
		}
	}
	return out
}

func without(list, minus []string) []string {
	drop := map[string]bool{}
	for _, v := range minus {
		drop[v] = true
	}
	out := list[:0:0]
	for _, v := range list {
		if !drop[v] {
			out = append(out, v)
		}
	}
	return out
}

// EffectiveAllowlist is (profile.allowed ∪ live.allowed) − deny.list, in
// canonical form, profile entries first.
func EffectiveAllowlist(stateDir string) ([]string, error) {
	var lists [3][]string
	for i, name := range []string{FileProfileAllowed, FileLiveAllowed, FileDenyList} {
		l, err := ReadIPFile(filepath.Join(stateDir, name))
		if err != nil {
			return nil, err
		}
		lists[i] = l
	}
	return without(union(lists[0], lists[1]), lists[2]), nil
}

// EffectiveDomains is (profile.domains ∪ live.domains) − denied.domains.
func EffectiveDomains(stateDir string, warn func(string)) ([]string, error) {
	var lists [3][]string
	for i, name := range []string{FileProfileDomains, FileLiveDomains, FileDeniedDomains} {
		l, err := ReadDomainFile(filepath.Join(stateDir, name), warn)
		if err != nil {
			return nil, err
		}
		lists[i] = l
	}
	return without(union(lists[0], lists[1]), lists[2]), nil
}

// HookTimeoutSeconds is the descriptor's "timeout": the OCI runtime kills a
// hook that runs longer and the container then fails to start (fail
// closed) instead of hanging in creation forever. A healthy createRuntime
// hook takes well under a second (docs/shield-hook.md); the margin covers a
// loaded host and the rootless gateway wait.
const HookTimeoutSeconds = 30

// Descriptor renders the OCI hook descriptor (docs/shield-hook.md, Invocation) for stage
// (createRuntime or poststop) and the absolute hookPath, with the timeout
// of HookTimeoutSeconds (docs/install.md, The OCI hook).
func Descriptor(stage, hookPath string) ([]byte, error) {
	if stage != StageCreateRuntime && stage != StagePoststop {
		return nil, fmt.Errorf("hook descriptor: unknown stage '%s'", stage)
	}
	if !filepath.IsAbs(hookPath) {
		return nil, fmt.Errorf("hook descriptor: hook path must be absolute: '%s'", hookPath)
	}
	type hook struct {
		Path    string   `json:"path"`
		Args    []string `json:"args"`
		Timeout int      `json:"timeout"`
	}
	type when struct {
		Annotations map[string]string `json:"annotations"`
	}
	d := struct {
		Version string   `json:"version"`
		Hook    hook     `json:"hook"`
		When    when     `json:"when"`
		Stages  []string `json:"stages"`
	}{"1.0.0", hook{hookPath, []string{HookBinary, stage}, HookTimeoutSeconds}, when{map[string]string{AnnProfiles: ".*"}}, []string{stage}}
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// DescriptorName returns the descriptor file name for stage.
func DescriptorName(stage string) string {
	if stage == StagePoststop {
		return DescPoststop
	}
	return DescCreateRuntime
}
