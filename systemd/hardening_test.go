package systemd

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// MaxExposure is the highest `systemd-analyze security --offline=yes`
// exposure a service unit may have (docs/install.md, Hardening of the units).
const MaxExposure = 2.0

// placeholder matches an unrendered {{NAME}}.
var placeholder = regexp.MustCompile(`\{\{([A-Z_]+)\}\}`)

// render fills every placeholder of tmpl with a path or value below dir.
func render(t *testing.T, tmpl, dir string) string {
	t.Helper()
	vals := map[string]string{
		"UNIT_VERSION": "1", "PORT": "18999", "SSH_AGENT_PORT": "18998", "ALLOW_STATIC_MARKER": "false",
		"BIN": "/bin/true", "TEROK_GATE_BIN": "/bin/true",
		"GATE_BASE_PATH": filepath.Join(dir, "state", "gate"), "TOKEN_FILE": filepath.Join(dir, "state", "gate", "tokens.json"),
		"CREDENTIALS_DIR": filepath.Join(dir, "credentials"), "DB_PATH": filepath.Join(dir, "credentials", "credentials.db"),
		"ROUTES_PATH": filepath.Join(dir, "credentials", "routes.json"), "SSH_KEYS_FILE": filepath.Join(dir, "credentials", "ssh-keys.json"),
		"SOCKET_PATH": filepath.Join(dir, "run", "credential-proxy.sock"),
		"AUDIT_DIR":   filepath.Join(dir, "state", "audit"), "AUDIT_FILE": filepath.Join(dir, "state", "audit", "proxy.jsonl"),
	}
	out := placeholder.ReplaceAllStringFunc(tmpl, func(m string) string {
		v, ok := vals[m[2:len(m)-2]]
		if !ok {
			t.Fatalf("no test value for %s", m)
		}
		return v
	})
	return out
}

var services = map[string]string{GateServiceName: GateService, ProxyServiceName: ProxyService, SSHAgentServiceName: SSHAgentService}

var exposureLine = regexp.MustCompile(`Overall exposure level for (\S+): (\d+\.\d+) `)

// exposure runs the real systemd-analyze security on one rendered unit
// file and returns its overall exposure and the report.
func exposure(t *testing.T, path string, user bool) (float64, string) {
	t.Helper()
	args := []string{"security", "--offline=yes", "--no-pager"}
	if user {
		args = append(args, "--user")
	}
	// --threshold makes systemd-analyze itself fail above the limit.
	args = append(args, fmt.Sprintf("--threshold=%d", int(MaxExposure*10)), path)
	cmd := exec.Command("systemd-analyze", args...)
	cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+t.TempDir(), "SYSTEMD_COLORS=0")
	out, err := cmd.CombinedOutput()
	m := exposureLine.FindStringSubmatch(string(out))
	if m == nil || m[1] != filepath.Base(path) {
		t.Fatalf("systemd-analyze %s: no exposure line (%v)\n%s", strings.Join(args, " "), err, out)
	}
	score, perr := strconv.ParseFloat(m[2], 64)
	if perr != nil {
		t.Fatal(perr)
	}
	// The threshold's verdict and the parsed score must agree.
	if (err != nil) != (score > MaxExposure) {
		t.Fatalf("systemd-analyze exit (%v) disagrees with exposure %.1f\n%s", err, score, out)
	}
	return score, string(out)
}

func unsafeLines(out string) string {
	var b strings.Builder
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "✗") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// Each service scores at most MaxExposure, for the system manager and for
// a user manager, as rendered with real paths.
func TestServiceExposure(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed")
	}
	for name, tmpl := range services {
		for _, user := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/user=%v", name, user), func(t *testing.T) {
				dir := t.TempDir()
				p := filepath.Join(dir, name)
				if err := os.WriteFile(p, []byte(render(t, tmpl, dir)), 0o644); err != nil {
					t.Fatal(err)
				}
				score, out := exposure(t, p, user)
				if score > MaxExposure {
					t.Fatalf("exposure %.1f > %.1f; the unsafe settings:\n%s", score, MaxExposure, unsafeLines(out))
				}
				t.Logf("exposure %.1f", score)
			})
		}
	}
}

// The hardening must leave each daemon the one place it writes, and
// every service the same baseline.
func TestServiceHardeningBaseline(t *testing.T) {
	writable := map[string]string{
		GateServiceName:     "ReadWritePaths={{GATE_BASE_PATH}} -{{AUDIT_DIR}}\n",
		ProxyServiceName:    "ReadWritePaths={{CREDENTIALS_DIR}} -{{AUDIT_DIR}}\n",
		SSHAgentServiceName: "ReadWritePaths={{CREDENTIALS_DIR}} -{{AUDIT_DIR}}\n",
	}
	baseline := []string{"ProtectSystem=strict\n", "CapabilityBoundingSet=\n", "NoNewPrivileges=yes\n", "PrivateTmp=yes\n",
		"SystemCallFilter=@system-service\n", "MemoryDenyWriteExecute=yes\n", "RestrictNamespaces=yes\n", "UMask=0077\n"}
	for name, tmpl := range services {
		if strings.Count(tmpl, "ReadWritePaths=") != 1 || !strings.Contains(tmpl, writable[name]) {
			t.Errorf("%s: writable paths are not exactly %q", name, writable[name])
		}
		for _, l := range baseline {
			if strings.Count(tmpl, l) != 1 {
				t.Errorf("%s: %q is not set exactly once", name, strings.TrimSpace(l))
			}
		}
		// Socket activation: the listeners come from the socket unit, so
		// the service must not be Accept=yes-style or lose the socket.
		if !strings.Contains(tmpl, "Requires=terok-") || strings.Contains(tmpl, "PrivateNetwork=yes") {
			t.Errorf("%s: would lose its socket", name)
		}
	}
}

// The check can fail: a service without the hardening is far above the
// limit (9.6 for the system manager).
func TestExposureOfAnUnhardenedService(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed")
	}
	p := filepath.Join(t.TempDir(), "plain.service")
	if err := os.WriteFile(p, []byte("[Service]\nExecStart=/bin/true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if score, _ := exposure(t, p, false); score <= MaxExposure+5 {
		t.Fatalf("an unhardened service scores %.1f", score)
	}
}
