package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"terok.dev/sandbox/common/testkit"
)

// TestDoctorDaemonHealthRealBinaries starts the real credential proxy (with
// its SSH agent child) and the real gate through terok-sandbox, and checks
// that doctor reports each daemon healthy, then down with its fix command.
func TestDoctorDaemonHealthRealBinaries(t *testing.T) {
	bin := t.TempDir()
	for name, pkg := range map[string]string{
		"terok-sandbox":          "terok.dev/sandbox/runner/cmd/terok-sandbox",
		"terok-credential-proxy": "terok.dev/sandbox/credproxy/cmd/terok-credential-proxy",
		"terok-ssh-agent":        "terok.dev/sandbox/sshagent/cmd/terok-ssh-agent",
		"terok-gate":             "terok.dev/sandbox/gate/cmd/terok-gate",
	} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, name), pkg).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", name, err, out)
		}
	}
	base := t.TempDir()
	cfgDir := filepath.Join(base, "config")
	if err := os.MkdirAll(cfgDir, 0o700); err != nil {
		t.Fatal(err)
	}
	ports := testkit.FreePorts(t, 3)
	pp, ap, gp := ports[0], ports[1], ports[2]
	if err := os.WriteFile(filepath.Join(cfgDir, "config.toml"),
		[]byte(fmt.Sprintf("proxy_port = %d\nssh_agent_port = %d\ngate_port = %d\n", pp, ap, gp)), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &proxyCLI{t: t, bin: filepath.Join(bin, "terok-sandbox")}
	p.env = append(os.Environ(),
		"PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"TEROK_SANDBOX_STATE_DIR="+filepath.Join(base, "state"),
		"TEROK_SANDBOX_RUNTIME_DIR="+filepath.Join(base, "run"),
		"TEROK_SANDBOX_CONFIG_DIR="+cfgDir,
		"TEROK_CREDENTIALS_DIR="+filepath.Join(base, "cred"),
		"TEROK_CONFIG_DIR="+filepath.Join(base, "umbrella"),
		"XDG_STATE_HOME="+filepath.Join(base, "xdgstate"),
		"HOME="+filepath.Join(base, "home"),
	)
	t.Cleanup(func() {
		p.sandbox("", "proxy", "stop")
		p.sandbox("", "gate", "stop")
	})
	type result struct {
		Label, Severity, Detail, Fix string
	}
	doctor := func() map[string]result {
		t.Helper()
		_, out, errOut := p.sandbox("", "doctor", "--json")
		var rs []result
		if err := json.Unmarshal([]byte(out), &rs); err != nil {
			t.Fatalf("doctor --json: %v\n%s%s", err, out, errOut)
		}
		m := map[string]result{}
		for _, r := range rs {
			m[r.Label] = r
		}
		return m
	}
	daemons := map[string]string{
		"Credential proxy (TCP)": "terok-sandbox proxy start",
		"SSH agent (TCP)":        "terok-sandbox proxy start",
		"Gate server (HTTP)":     "terok-sandbox gate start",
		"SSH agent health":       "terok-sandbox proxy stop; terok-sandbox proxy start",
	}
	for label, fix := range daemons {
		if r := doctor()[label]; r.Severity != "error" || r.Fix != fix {
			t.Errorf("%s with nothing running: %+v, want error with fix %q", label, r, fix)
		}
	}
	_, out, _ := p.sandbox("", "doctor")
	if !strings.Contains(out, "  Gate server (HTTP) .... ERROR (gate unreachable at http://host.containers.internal:") ||
		!strings.Contains(out, "\n      fix: terok-sandbox gate start\n") {
		t.Errorf("human output:\n%s", out)
	}

	p.ok("", "proxy", "start")
	p.ok("", "gate", "start", "--daemon")
	got := doctor()
	for label := range daemons {
		if r := got[label]; r.Severity != "ok" || r.Fix != "" {
			t.Errorf("%s with the daemons running: %+v", label, r)
		}
	}
	if d := got["Gate server (HTTP)"].Detail; d != fmt.Sprintf("gate healthy at port %d", gp) {
		t.Errorf("gate detail %q", d)
	}
	if d := got["SSH agent health"].Detail; d != fmt.Sprintf("SSH agent healthy at port %d", ap) {
		t.Errorf("agent detail %q", d)
	}

	// The gate's tokens file turns unreadable: the gate answers 503 and
	// doctor names what it reports.
	tokens := filepath.Join(base, "state", "gate", "tokens.json")
	_ = os.Remove(tokens)
	if err := os.Symlink(tokens, tokens); err != nil {
		t.Fatal(err)
	}
	if r := doctor()["Gate server (HTTP)"]; r.Severity != "error" || !strings.Contains(r.Detail, "unhealthy (tokens-file)") {
		t.Errorf("gate with an unreadable tokens file: %+v", r)
	}
	_ = os.Remove(tokens)

	p.ok("", "gate", "stop")
	p.ok("", "proxy", "stop")
	for label, fix := range daemons {
		if r := doctor()[label]; r.Severity != "error" || r.Fix != fix {
			t.Errorf("%s after stop: %+v", label, r)
		}
	}
}
