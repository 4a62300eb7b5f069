// Package config is the single configuration object every component shares
// (config-and-paths.md): fields and defaults, derived paths, root resolution
// from the environment and the optional config.toml in the sandbox config root.
package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/BurntSushi/toml"

	"terok.dev/sandbox/common/shieldbundle"
)

// Default ports (docs/config.md, The configuration).
const (
	DefaultGatePort     = 9418
	DefaultProxyPort    = 18731
	DefaultSSHAgentPort = 18732
	DefaultProfile      = "dev-standard"
	// FileName is the optional config file in the sandbox config root.
	FileName = "config.toml"
)

// Config is immutable by convention: build it once with Load (or Defaults and
// field overrides followed by Validate) and pass it by value. Slices are
// copied by Clone when a caller needs to change one.
type Config struct {
	StateDir       string
	RuntimeDir     string
	ConfigDir      string
	CredentialsDir string
	// UmbrellaConfigDir is the tool family's config root; shield profiles live
	// under it, never under ConfigDir (docs/config.md, Base directories).
	UmbrellaConfigDir string

	GatePort     int
	ProxyPort    int
	SSHAgentPort int

	ShieldProfiles []string
	ShieldAudit    bool
	// ShieldBypass is DANGEROUS: containers start without any egress firewall.
	ShieldBypass bool
	// ShieldUpstreamDNS is the forwarder the container's own resolver sends
	// allowlisted names to; "" means the network mode's user-mode forwarder
	// (slirp4netns 10.0.2.3, pasta 169.254.1.1). Only the resolver can reach it.
	ShieldUpstreamDNS string
	// ShieldDecideTimeout is how long a connection held in interactive
	// mode waits for the decider's answer before it is refused (a Go
	// duration within shieldbundle.MinDecideTimeout..MaxDecideTimeout);
	// "" means shieldbundle.DefaultDecideTimeout (docs/shield-resolver.md,
	// Interactive approval).
	ShieldDecideTimeout string

	// ProxyStaticMarker is a compatibility switch: when true the credential
	// proxy accepts the fixed static phantom marker for the default
	// credential set (any container that reaches the proxy gets it, without
	// a token and without revocation). Off by default; on, every use is
	// logged and doctor warns.
	ProxyStaticMarker bool

	// CredentialsEncryption (default true) keeps credential values and SSH
	// private keys sealed at rest; the runner's first write of a secret
	// creates the keystore where systemd-creds can seal it without a
	// passphrase (docs/secrets-at-rest.md, On by default). false is for
	// hosts that still run the older plaintext-only daemons against the
	// same store: the runner then creates no keystore and `credentials
	// migrate` decrypts back.
	CredentialsEncryption bool

	// Audit (default true) makes the daemons write their audit records to
	// AuditFile(channel) (docs/audit.md, Files, rotation, modes); false turns every daemon's
	// records off. The shield's own operator log is ShieldAudit.
	Audit bool

	// Source names where non-default values came from, for error messages.
	Source string
}

// Defaults returns the configuration for env with no file applied.
func Defaults(env Env) Config {
	return Config{
		StateDir:              env.StateRoot(),
		RuntimeDir:            env.RuntimeRoot(),
		ConfigDir:             env.ConfigRoot(),
		CredentialsDir:        env.CredentialsRoot(),
		UmbrellaConfigDir:     env.UmbrellaConfigRoot(),
		GatePort:              DefaultGatePort,
		ProxyPort:             DefaultProxyPort,
		SSHAgentPort:          DefaultSSHAgentPort,
		ShieldProfiles:        []string{DefaultProfile},
		ShieldAudit:           true,
		CredentialsEncryption: true,
		Audit:                 true,
		ShieldBypass:          false,
		Source:                "defaults",
	}
}

// Clone returns a deep copy, for callers that derive a changed configuration.
func (c Config) Clone() Config {
	c.ShieldProfiles = append([]string(nil), c.ShieldProfiles...)
	return c
}

// fileConfig mirrors config.toml. Pointers tell "absent" from "zero".
type fileConfig struct {
	StateDir       *string   `toml:"state_dir"`
	RuntimeDir     *string   `toml:"runtime_dir"`
	CredentialsDir *string   `toml:"credentials_dir"`
	GatePort       *int64    `toml:"gate_port"`
	ProxyPort      *int64    `toml:"proxy_port"`
	SSHAgentPort   *int64    `toml:"ssh_agent_port"`
	ShieldProfiles *[]string `toml:"shield_profiles"`
	ShieldAudit    *bool     `toml:"shield_audit"`
	ShieldBypass   *bool     `toml:"shield_bypass"`
	ShieldUpstream *string   `toml:"shield_upstream_dns"`
	ShieldDecide   *string   `toml:"shield_decide_timeout"`
	StaticMarker   *bool     `toml:"proxy_static_marker"`
	CredEncryption *bool     `toml:"credentials_encryption"`
	Audit          *bool     `toml:"audit"`
}

// Load builds the configuration of a standalone process: defaults, then the
// optional config file (path "" means <config root>/config.toml; a missing
// default file is fine, a missing explicit one is an error), then the
// environment's root overrides, which win over the file. The result is
// validated.
func Load(env Env, path string) (Config, error) {
	cfg := Defaults(env)
	explicit := path != ""
	if !explicit {
		path = filepath.Join(cfg.ConfigDir, FileName)
	}
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := cfg.applyFile(env, path, data); err != nil {
			return Config{}, err
		}
	case errors.Is(err, os.ErrNotExist) && !explicit:
	default:
		return Config{}, fmt.Errorf("read config file %s: %w", path, err)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

func (c *Config) applyFile(env Env, path string, data []byte) error {
	var fc fileConfig
	md, err := toml.Decode(string(data), &fc)
	if err != nil {
		return fmt.Errorf("config file %s: %w; fix the TOML syntax", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return fmt.Errorf("config file %s: unknown key %q; valid keys are %s",
			path, keys[0], strings.Join(fileKeys, ", "))
	}
	c.Source = "config file " + path
	// The environment overrides the file for the roots it names.
	setPath := func(dst *string, v *string, envVar, key string) error {
		if v == nil || env.get(envVar) != "" {
			return nil
		}
		if strings.TrimSpace(*v) == "" {
			return fmt.Errorf("config file %s: key %q is empty; give an absolute path or remove the key", path, key)
		}
		*dst = env.Expand(*v)
		return nil
	}
	if err := setPath(&c.StateDir, fc.StateDir, "TEROK_SANDBOX_STATE_DIR", "state_dir"); err != nil {
		return err
	}
	if err := setPath(&c.RuntimeDir, fc.RuntimeDir, "TEROK_SANDBOX_RUNTIME_DIR", "runtime_dir"); err != nil {
		return err
	}
	if err := setPath(&c.CredentialsDir, fc.CredentialsDir, "TEROK_CREDENTIALS_DIR", "credentials_dir"); err != nil {
		return err
	}
	setPort := func(dst *int, v *int64, key string) error {
		if v == nil {
			return nil
		}
		if *v < 1 || *v > 65535 {
			return fmt.Errorf("config file %s: key %q: %d is out of range; use a port between 1 and 65535", path, key, *v)
		}
		*dst = int(*v)
		return nil
	}
	if err := setPort(&c.GatePort, fc.GatePort, "gate_port"); err != nil {
		return err
	}
	if err := setPort(&c.ProxyPort, fc.ProxyPort, "proxy_port"); err != nil {
		return err
	}
	if err := setPort(&c.SSHAgentPort, fc.SSHAgentPort, "ssh_agent_port"); err != nil {
		return err
	}
	if fc.ShieldProfiles != nil {
		c.ShieldProfiles = append([]string(nil), (*fc.ShieldProfiles)...)
	}
	if fc.ShieldAudit != nil {
		c.ShieldAudit = *fc.ShieldAudit
	}
	if fc.ShieldBypass != nil {
		c.ShieldBypass = *fc.ShieldBypass
	}
	if fc.ShieldUpstream != nil {
		c.ShieldUpstreamDNS = strings.TrimSpace(*fc.ShieldUpstream)
	}
	if fc.ShieldDecide != nil {
		c.ShieldDecideTimeout = strings.TrimSpace(*fc.ShieldDecide)
	}
	if fc.StaticMarker != nil {
		c.ProxyStaticMarker = *fc.StaticMarker
	}
	if fc.CredEncryption != nil {
		c.CredentialsEncryption = *fc.CredEncryption
	}
	if fc.Audit != nil {
		c.Audit = *fc.Audit
	}
	return nil
}

var fileKeys = []string{"state_dir", "runtime_dir", "credentials_dir", "gate_port", "proxy_port",
	"ssh_agent_port", "shield_profiles", "shield_audit", "shield_bypass", "shield_upstream_dns",
	"shield_decide_timeout",
	"proxy_static_marker", "credentials_encryption", "audit"}

// NamePattern is what project ids and profile names must match.
var NamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// ValidName reports whether s is a valid project id or profile name.
func ValidName(s string) bool { return NamePattern.MatchString(s) }

// Validate checks every field; the error names the source, the key and the fix.
func (c Config) Validate() error {
	src := c.Source
	if src == "" {
		src = "configuration"
	}
	for _, p := range []struct {
		key string
		v   int
	}{{"gate_port", c.GatePort}, {"proxy_port", c.ProxyPort}, {"ssh_agent_port", c.SSHAgentPort}} {
		if p.v < 1 || p.v > 65535 {
			return fmt.Errorf("%s: key %q: %d is out of range; use a port between 1 and 65535", src, p.key, p.v)
		}
	}
	if len(c.ShieldProfiles) == 0 {
		return fmt.Errorf("%s: key \"shield_profiles\" is empty; name at least one profile, e.g. [%q]", src, DefaultProfile)
	}
	for _, name := range c.ShieldProfiles {
		if !ValidName(name) {
			return fmt.Errorf("%s: key \"shield_profiles\": invalid profile name %q; use letters, digits, '.', '_' and '-', starting with a letter or digit", src, name)
		}
	}
	if c.ShieldUpstreamDNS != "" {
		a, err := netip.ParseAddr(c.ShieldUpstreamDNS)
		if err != nil || a.Zone() != "" {
			return fmt.Errorf("%s: key \"shield_upstream_dns\": %q is not an IP address; give one IPv4 or IPv6 address (e.g. \"10.0.2.3\") or remove the key for the default", src, c.ShieldUpstreamDNS)
		}
		if a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() {
			return fmt.Errorf("%s: key \"shield_upstream_dns\": %s cannot be a forwarder (unspecified, loopback or multicast); give the address of a DNS server the container's network reaches", src, a)
		}
	}
	if c.ShieldDecideTimeout != "" {
		if _, err := shieldbundle.ParseDecideTimeout(c.ShieldDecideTimeout); err != nil {
			return fmt.Errorf("%s: key \"shield_decide_timeout\": %v; give a duration such as \"30s\" or remove the key for the default", src, err)
		}
	}
	for _, p := range []struct{ key, v string }{
		{"state_dir", c.StateDir}, {"runtime_dir", c.RuntimeDir}, {"config_dir", c.ConfigDir},
		{"credentials_dir", c.CredentialsDir}, {"umbrella_config_dir", c.UmbrellaConfigDir},
	} {
		if !filepath.IsAbs(p.v) {
			return fmt.Errorf("%s: key %q: %q is not an absolute path; give an absolute path", src, p.key, p.v)
		}
	}
	return nil
}
