package systemd

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestSSHAgentTemplates(t *testing.T) {
	for name, tmpl := range map[string]string{SSHAgentSocketName: SSHAgentSocket, SSHAgentServiceName: SSHAgentService} {
		if !strings.HasPrefix(tmpl, SSHAgentStampPrefix+" {{UNIT_VERSION}}\n") {
			t.Errorf("%s: first line is not the version stamp", name)
		}
	}
	if strings.Count(SSHAgentSocket, "ListenStream=") != 1 || !strings.Contains(SSHAgentSocket, "ListenStream=127.0.0.1:{{PORT}}\n") {
		t.Error("the socket must pass exactly one loopback TCP listener")
	}
	for _, ph := range []string{"{{BIN}}", "{{DB_PATH}}", "{{SSH_KEYS_FILE}}", "{{PORT}}", "{{CREDENTIALS_DIR}}", "{{AUDIT_DIR}}", "--audit-file={{AUDIT_FILE}}"} {
		if !strings.Contains(SSHAgentService, ph) {
			t.Errorf("service lacks %s", ph)
		}
	}
}

// The rendered units pass systemd-analyze verify --user.
func TestSSHAgentUnitsVerify(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed")
	}
	dir := t.TempDir()
	runtime := filepath.Join(dir, "xdg-runtime")
	if err := os.MkdirAll(runtime, 0o700); err != nil {
		t.Fatal(err)
	}
	r := strings.NewReplacer("{{UNIT_VERSION}}", "1", "{{PORT}}", "18732", "{{BIN}}", "/bin/true",
		"{{DB_PATH}}", filepath.Join(dir, "credentials.db"), "{{SSH_KEYS_FILE}}", filepath.Join(dir, "ssh-keys.json"),
		"{{CREDENTIALS_DIR}}", dir, "{{AUDIT_DIR}}", filepath.Join(dir, "audit"), "{{AUDIT_FILE}}", filepath.Join(dir, "audit", "ssh.jsonl"))
	var paths []string
	for name, tmpl := range map[string]string{SSHAgentSocketName: SSHAgentSocket, SSHAgentServiceName: SSHAgentService} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(r.Replace(tmpl)), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	cmd := exec.Command("systemd-analyze", append([]string{"verify", "--user"}, paths...)...)
	cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+runtime)
	out, err := cmd.CombinedOutput()
	if err != nil || strings.Contains(string(out), "terok-ssh-agent") {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
