package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"terok.dev/sandbox/common/config"
)

// shieldCLI runs the CLI with a private home, config roots and a
// CONTAINERS_CONF naming a hooks directory of the test's own.
type shieldCLI struct {
	home, hooksDir string
	vars           map[string]string
	euid           int
}

func newShieldCLI(t *testing.T) *shieldCLI {
	t.Helper()
	home := t.TempDir()
	hooks := filepath.Join(home, "hooks")
	conf := filepath.Join(home, "containers.conf")
	if err := os.WriteFile(conf, []byte("[engine]\nhooks_dir = [\""+hooks+"\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return &shieldCLI{home: home, hooksDir: hooks, euid: 1000, vars: map[string]string{
		"CONTAINERS_CONF":           conf,
		"TEROK_SANDBOX_RUNTIME_DIR": filepath.Join(home, "run"),
		"TEROK_SANDBOX_CONFIG_DIR":  filepath.Join(home, "cfg"),
	}}
}

func (s *shieldCLI) run(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	env := config.Env{EUID: s.euid, Home: s.home, Getenv: func(k string) string { return s.vars[k] }}
	code := Run(append([]string{Program}, args...), Deps{Stdout: &out, Stderr: &errb, Env: env})
	return code, out.String(), errb.String()
}

func TestShieldUsageErrors(t *testing.T) {
	s := newShieldCLI(t)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"shield", "setup"}, "--user"},
		{[]string{"shield", "setup", "--root", "--user"}, "--root and --user are mutually exclusive"},
		{[]string{"shield", "setup", "extra"}, "no arguments"},
		{[]string{"shield", "allow", "c"}, "CONTAINER TARGET"},
		{[]string{"shield", "allow", "c", "1.2.3"}, "Invalid IP/CIDR: '1.2.3'"},
		{[]string{"shield", "deny", "c", "300.1.1.1"}, "Invalid IP/CIDR"},
		{[]string{"shield", "allow", "c", "bad domain!"}, "invalid target"},
		{[]string{"shield", "allow", "c", "1.2.3.4; flush ruleset"}, "invalid target"},
		{[]string{"shield", "deny", "c", "com"}, "invalid target"},
		{[]string{"shield", "up"}, "CONTAINER"},
		{[]string{"shield", "up", "--all", "c"}, "flag provided but not defined"},
		{[]string{"shield", "down", "a", "b"}, "CONTAINER"},
		{[]string{"shield", "state", "-x"}, ""},
		{[]string{"shield", "preview", "--all", "c"}, "--all requires --down"},
		{[]string{"shield", "log", "--tail", "-1", "c"}, "-n must be"},
		{[]string{"shield", "log", "-n", "-1", "c"}, "-n must be"},
		{[]string{"shield", "log", "--since", "yesterday-ish", "c"}, "--since"},
		{[]string{"shield", "log"}, "CONTAINER"},
		{[]string{"shield", "watch"}, "CONTAINER"},
		{[]string{"shield", "profile", "suggest"}, "CONTAINER"},
		{[]string{"shield", "profile", "suggest", "--output", "", "c"}, "--output needs"},
		{[]string{"shield", "watch", "a", "b"}, "CONTAINER"},
		{[]string{"shield", "interactive"}, "CONTAINER"},
		{[]string{"shield", "interactive", "a", "b"}, "CONTAINER"},
		{[]string{"shield", "watch", "--since", "1h", "c"}, "flag provided but not defined"},
		{[]string{"shield", "nope"}, "unknown command"},
	}
	for _, tt := range tests {
		code, _, errOut := s.run(tt.args...)
		if code != ExitUsage || !strings.Contains(errOut, tt.want) {
			t.Errorf("%v: code %d, stderr %q (want exit 2 with %q)", tt.args, code, errOut, tt.want)
		}
	}
}

func TestShieldStatusAndSetup(t *testing.T) {
	s := newShieldCLI(t)
	// Before setup: exact lines, setup hint on stderr.
	code, out, errOut := s.run("shield", "status")
	want := "Shield mode:    hook\nProfiles:       dev-standard\nAudit:          enabled\nHooks:          not-installed\nHealth:         setup-needed\n"
	if code != 0 || out != want {
		t.Fatalf("status: code %d\n got %q\nwant %q", code, out, want)
	}
	if !strings.HasPrefix(errOut, "\n") || !strings.Contains(errOut, "terok-sandbox shield setup --user") {
		t.Fatalf("status stderr %q", errOut)
	}
	code, out, _ = s.run("shield", "check", "--json")
	if code != ExitError || !strings.Contains(out, `"needs_setup": true`) || !strings.Contains(out, `"health": "setup-needed"`) {
		t.Fatalf("check before setup: code %d out %s", code, out)
	}

	// setup --root as root installs into the hooks_dir CONTAINERS_CONF names.
	bin := t.TempDir()
	hook := filepath.Join(bin, "terok-shield-hook")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\n[ \"$1\" = --bundle-version ] && echo 5\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	s.euid = 0
	code, out, errOut = s.run("shield", "setup", "--root")
	if code != 0 || !strings.HasPrefix(out, "Shield hooks installed in "+s.hooksDir+"\nSeccomp profile installed at ") {
		t.Fatalf("setup --root: code %d out %q err %q", code, out, errOut)
	}
	// The descriptors name the installed hook; no copy goes into hooks.d.
	for _, f := range []string{"terok-shield-createRuntime.json", "terok-shield-poststop.json"} {
		data, err := os.ReadFile(filepath.Join(s.hooksDir, f))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), `"path": "`+hook+`"`) {
			t.Fatalf("%s does not name %s:\n%s", f, hook, data)
		}
	}
	if _, err := os.Stat(filepath.Join(s.hooksDir, "terok-shield-hook")); err == nil {
		t.Fatal("setup copied the hook into hooks.d")
	}
	code, out, errOut = s.run("shield", "status")
	if code != 0 || !strings.HasSuffix(out, "Hooks:          global-system\nHealth:         ok\n") || errOut != "" {
		t.Fatalf("status after setup: code %d out %q err %q", code, out, errOut)
	}

	// --user writes the hooks below HOME and warns that CONTAINERS_CONF
	// overrides the user containers.conf.
	s.euid = 1000
	code, out, errOut = s.run("shield", "setup", "--user")
	userDir := filepath.Join(s.home, ".local", "share", "containers", "oci", "hooks.d")
	if code != 0 || !strings.HasPrefix(out, "Shield hooks installed in "+userDir+"\n") || !strings.Contains(errOut, "CONTAINERS_CONF") {
		t.Fatalf("setup --user: code %d out %q err %q", code, out, errOut)
	}
	data, err := os.ReadFile(filepath.Join(s.home, ".config", "containers", "containers.conf"))
	if err != nil || !strings.Contains(string(data), userDir) {
		t.Fatalf("user containers.conf: %q %v", data, err)
	}
}

func TestShieldStatusBypass(t *testing.T) {
	s := newShieldCLI(t)
	if err := os.MkdirAll(filepath.Join(s.home, "cfg"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.home, "cfg", "config.toml"), []byte("shield_bypass = true\nshield_profiles = [\"a\", \"b\"]\nshield_audit = false\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := s.run("shield", "status")
	want := "Shield mode:    hook\nProfiles:       a, b\nAudit:          disabled\nHooks:          per-container\nHealth:         bypass\n"
	if code != 0 || out != want || !strings.Contains(errOut, "bypass_firewall_no_protection") {
		t.Fatalf("status under bypass: code %d\n got %q\nwant %q\nerr %q", code, out, want, errOut)
	}
	code, out, _ = s.run("shield", "status", "--json")
	if code != 0 || !strings.Contains(out, `"bypass_firewall_no_protection": true`) || !strings.Contains(out, `"mode": "hook"`) {
		t.Fatalf("status --json: %s", out)
	}
	// up/down are no-ops under bypass.
	if code, _, errOut := s.run("shield", "down", "c"); code != 0 || !strings.Contains(errOut, "nothing to do") {
		t.Fatalf("down under bypass: %d %q", code, errOut)
	}
}
