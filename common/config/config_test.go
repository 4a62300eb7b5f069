package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func envOf(euid int, home string, vars map[string]string) Env {
	return Env{Getenv: func(k string) string { return vars[k] }, EUID: euid, Home: home}
}

func TestRoots(t *testing.T) {
	home := "/home/u"
	tests := []struct {
		name string
		env  Env
		want [5]string // state, runtime, config, credentials, umbrella
	}{
		{"non-root defaults", envOf(1000, home, nil), [5]string{
			"/home/u/.local/share/terok/sandbox", "/home/u/.local/state/terok/sandbox",
			"/home/u/.config/terok/sandbox", "/home/u/.local/share/terok/credentials", "/home/u/.config/terok"}},
		{"root defaults", envOf(0, "/root", nil), [5]string{
			"/var/lib/terok/sandbox", "/run/terok/sandbox", "/etc/terok/sandbox",
			"/var/lib/terok/credentials", "/etc/terok"}},
		{"xdg", envOf(1000, home, map[string]string{"XDG_DATA_HOME": "/x/data", "XDG_RUNTIME_DIR": "/run/user/1000",
			"XDG_CONFIG_HOME": "/x/cfg", "XDG_STATE_HOME": "/x/state"}), [5]string{
			"/x/data/terok/sandbox", "/run/user/1000/terok/sandbox", "/x/cfg/terok/sandbox",
			"/x/data/terok/credentials", "/x/cfg/terok"}},
		{"runtime falls back to XDG_STATE_HOME", envOf(1000, home, map[string]string{"XDG_STATE_HOME": "/x/state"}),
			[5]string{"/home/u/.local/share/terok/sandbox", "/x/state/terok/sandbox", "/home/u/.config/terok/sandbox",
				"/home/u/.local/share/terok/credentials", "/home/u/.config/terok"}},
		{"empty xdg counts as unset", envOf(1000, home, map[string]string{"XDG_DATA_HOME": "", "XDG_RUNTIME_DIR": ""}),
			[5]string{"/home/u/.local/share/terok/sandbox", "/home/u/.local/state/terok/sandbox", "/home/u/.config/terok/sandbox",
				"/home/u/.local/share/terok/credentials", "/home/u/.config/terok"}},
		{"overrides win over root and expand ~", envOf(0, "/root", map[string]string{
			"TEROK_SANDBOX_STATE_DIR": "~/st", "TEROK_SANDBOX_RUNTIME_DIR": "/r", "TEROK_SANDBOX_CONFIG_DIR": "/c",
			"TEROK_CREDENTIALS_DIR": "/cr", "TEROK_CONFIG_DIR": "/u"}), [5]string{"/root/st", "/r", "/c", "/cr", "/u"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := [5]string{tc.env.StateRoot(), tc.env.RuntimeRoot(), tc.env.ConfigRoot(),
				tc.env.CredentialsRoot(), tc.env.UmbrellaConfigRoot()}
			if got != tc.want {
				t.Errorf("roots = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestRelativeOverrideBecomesAbsolute(t *testing.T) {
	e := envOf(1000, "/home/u", map[string]string{"TEROK_SANDBOX_STATE_DIR": "rel/dir"})
	got := e.StateRoot()
	wd, _ := os.Getwd()
	if got != filepath.Join(wd, "rel/dir") {
		t.Errorf("StateRoot = %q, want absolute under %q", got, wd)
	}
}

func TestDerivedPaths(t *testing.T) {
	c := Defaults(envOf(1000, "/h", map[string]string{"TEROK_SANDBOX_STATE_DIR": "/s", "TEROK_SANDBOX_RUNTIME_DIR": "/r",
		"TEROK_CREDENTIALS_DIR": "/c", "TEROK_CONFIG_DIR": "/u", "TEROK_SANDBOX_CONFIG_DIR": "/sc"}))
	for got, want := range map[string]string{
		c.GateBasePath(): "/s/gate", c.GateTokenFile(): "/s/gate/tokens.json", c.GateTokenLock(): "/s/gate/tokens.json.lock",
		c.GatePIDFile(): "/r/gate-server.pid", c.ShieldProfilesDir(): "/u/shield/profiles", c.CredentialsDB(): "/c/credentials.db",
		c.ProxySocket(): "/r/credential-proxy.sock", c.ProxyPIDFile(): "/r/credential-proxy.pid", c.RoutesFile(): "/c/routes.json",
		c.SSHKeysDir(): "/s/ssh-keys", c.SSHKeysJSON(): "/c/ssh-keys.json", c.ProxyLogFile(): "/s/proxy/credential-proxy.log",
		ShieldStateDir("/t/42"): "/t/42/shield",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	if c.GatePort != 9418 || c.ProxyPort != 18731 || c.SSHAgentPort != 18732 || !c.ShieldAudit || c.ShieldBypass ||
		len(c.ShieldProfiles) != 1 || c.ShieldProfiles[0] != "dev-standard" || !c.CredentialsEncryption {
		t.Errorf("defaults wrong: %+v", c)
	}
}

func writeConfig(t *testing.T, body string) (Env, string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, FileName), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return envOf(1000, "/h", map[string]string{"TEROK_SANDBOX_CONFIG_DIR": dir}), filepath.Join(dir, FileName)
}

func TestLoadFile(t *testing.T) {
	env, _ := writeConfig(t, `
gate_port = 19418
proxy_port = 28731
ssh_agent_port = 28732
shield_profiles = ["base", "dev-node"]
shield_audit = false
shield_bypass = true
shield_upstream_dns = "2001:db8::53"
shield_decide_timeout = "2s"
proxy_static_marker = true
credentials_encryption = false
state_dir = "/srv/terok"
`)
	c, err := Load(env, "")
	if err != nil {
		t.Fatal(err)
	}
	if c.GatePort != 19418 || c.ProxyPort != 28731 || c.SSHAgentPort != 28732 || c.ShieldAudit || !c.ShieldBypass ||
		strings.Join(c.ShieldProfiles, ",") != "base,dev-node" || c.StateDir != "/srv/terok" ||
		c.ShieldUpstreamDNS != "2001:db8::53" || c.ShieldDecideTimeout != "2s" || !c.ProxyStaticMarker || c.CredentialsEncryption {
		t.Errorf("file not applied: %+v", c)
	}
}

func TestEnvironmentBeatsFile(t *testing.T) {
	env, _ := writeConfig(t, `state_dir = "/from/file"`)
	inner := env.Getenv
	env.Getenv = func(k string) string {
		if k == "TEROK_SANDBOX_STATE_DIR" {
			return "/from/env"
		}
		return inner(k)
	}
	c, err := Load(env, "")
	if err != nil {
		t.Fatal(err)
	}
	if c.StateDir != "/from/env" {
		t.Errorf("StateDir = %q, want /from/env", c.StateDir)
	}
}

func TestLoadErrorsNameFileKeyAndFix(t *testing.T) {
	tests := []struct {
		name, body string
		want       []string
	}{
		{"port out of range", "gate_port = 70000", []string{"gate_port", "70000", "between 1 and 65535"}},
		{"port zero", "proxy_port = 0", []string{"proxy_port", "between 1 and 65535"}},
		{"empty profiles", "shield_profiles = []", []string{"shield_profiles", "at least one"}},
		{"bad profile name", `shield_profiles = ["../etc"]`, []string{"shield_profiles", "../etc"}},
		{"empty profile name", `shield_profiles = [""]`, []string{"shield_profiles", "invalid profile name"}},
		{"unknown key", "gate_prot = 1", []string{"unknown key", "gate_prot", "valid keys"}},
		{"unknown table key", "[shield]\nbypass = true", []string{"unknown key"}},
		{"wrong type", `gate_port = "x"`, []string{FileName}},
		{"syntax", "gate_port = = 1", []string{"TOML"}},
		{"empty path", `state_dir = ""`, []string{"state_dir", "empty"}},
		{"upstream not an address", `shield_upstream_dns = "dns.example"`, []string{"shield_upstream_dns", "not an IP address"}},
		{"upstream CIDR", `shield_upstream_dns = "10.0.2.0/24"`, []string{"shield_upstream_dns", "not an IP address"}},
		{"upstream loopback", `shield_upstream_dns = "127.0.0.1"`, []string{"shield_upstream_dns", "loopback"}},
		{"upstream unspecified", `shield_upstream_dns = "::"`, []string{"shield_upstream_dns", "unspecified"}},
		{"decide timeout not a duration", `shield_decide_timeout = "soon"`, []string{"shield_decide_timeout", "30s"}},
		{"decide timeout too short", `shield_decide_timeout = "10ms"`, []string{"shield_decide_timeout", "100ms"}},
		{"decide timeout too long", `shield_decide_timeout = "1h"`, []string{"shield_decide_timeout", "10m"}},
		{"static marker not a bool", `proxy_static_marker = "yes"`, []string{FileName}},
		{"encryption not a bool", `credentials_encryption = "no"`, []string{FileName}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, path := writeConfig(t, tc.body)
			_, err := Load(env, "")
			if err == nil {
				t.Fatalf("Load accepted %q", tc.body)
			}
			msg := err.Error()
			if !strings.Contains(msg, path) {
				t.Errorf("error %q does not name the file %s", msg, path)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
		})
	}
}

func TestMissingFiles(t *testing.T) {
	env := envOf(1000, "/h", map[string]string{"TEROK_SANDBOX_CONFIG_DIR": t.TempDir()})
	if _, err := Load(env, ""); err != nil {
		t.Errorf("missing default file must be fine: %v", err)
	}
	if _, err := Load(env, "/nonexistent/terok.toml"); err == nil {
		t.Error("missing explicit file must be an error")
	}
}

func TestValidate(t *testing.T) {
	c := Defaults(envOf(1000, "/h", nil))
	c.Source = "test"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := c.Clone()
	bad.SSHAgentPort = 65536
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "ssh_agent_port") {
		t.Errorf("Validate = %v", err)
	}
	bad = c.Clone()
	bad.StateDir = "relative"
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "state_dir") {
		t.Errorf("Validate = %v", err)
	}
	cl := c.Clone()
	cl.ShieldProfiles[0] = "changed"
	if c.ShieldProfiles[0] != DefaultProfile {
		t.Error("Clone shares the profiles slice")
	}
}

func TestUnitDirAndDebugLog(t *testing.T) {
	e := envOf(1000, "/h", nil)
	if e.SystemdUserUnitDir() != "/h/.config/systemd/user" || e.RunnerDebugLog() != "/h/.local/state/terok-sandbox/terok-sandbox.log" {
		t.Errorf("%s %s", e.SystemdUserUnitDir(), e.RunnerDebugLog())
	}
	e = envOf(1000, "/h", map[string]string{"XDG_CONFIG_HOME": "/h/c", "XDG_STATE_HOME": "/h/s"})
	if e.SystemdUserUnitDir() != "/h/c/systemd/user" || e.RunnerDebugLog() != "/h/s/terok-sandbox/terok-sandbox.log" {
		t.Errorf("%s %s", e.SystemdUserUnitDir(), e.RunnerDebugLog())
	}
}

func FuzzLoadFile(f *testing.F) {
	f.Add("gate_port = 1\nshield_profiles = [\"a\"]")
	f.Add("shield_bypass = true")
	f.Add("[x]\ny=1")
	f.Fuzz(func(t *testing.T, body string) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, FileName), []byte(body), 0o600); err != nil {
			t.Skip()
		}
		c, err := Load(envOf(1000, "/h", map[string]string{"TEROK_SANDBOX_CONFIG_DIR": dir}), "")
		if err == nil {
			if verr := c.Validate(); verr != nil {
				t.Fatalf("Load returned an invalid config: %v", verr)
			}
		}
	})
}
