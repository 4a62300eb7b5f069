package cli

import (
	"bytes"
	"strings"
	"testing"

	"terok.dev/sandbox/common/config"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	dir := t.TempDir()
	env := config.Env{EUID: 1000, Home: dir, Getenv: func(k string) string {
		if strings.HasPrefix(k, "TEROK_") || strings.HasPrefix(k, "XDG_") {
			return ""
		}
		return ""
	}}
	code := Run(append([]string{Program}, args...), Deps{Stdout: &out, Stderr: &errb, Env: env})
	return code, out.String(), errb.String()
}

func TestExitCodeRules(t *testing.T) {
	if code, out, _ := runCLI(t); code != ExitError || !strings.Contains(out, "USAGE") {
		t.Errorf("no command: code %d, out %q", code, out)
	}
	if code, out, _ := runCLI(t, "--version"); code != 0 || strings.TrimSpace(out) != "terok-sandbox 0.1.0-dev" {
		t.Errorf("--version: code %d, out %q", code, out)
	}
	if code, _, errOut := runCLI(t, "--no-such-flag"); code != ExitUsage {
		t.Errorf("bad global flag: code %d, stderr %q", code, errOut)
	}
	if code, _, _ := runCLI(t, "no-such-command"); code == 0 {
		t.Errorf("unknown command exited 0")
	}
}

func TestGroupsWithoutSubcommandShowHelp(t *testing.T) {
	for _, g := range []string{"gate", "proxy", "ssh", "shield", "credentials"} {
		code, out, errOut := runCLI(t, g)
		if code != 0 || !strings.Contains(out, g) {
			t.Errorf("%s: code %d, out %q, err %q", g, code, out, errOut)
		}
	}
}
