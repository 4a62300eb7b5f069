//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"terok.dev/sandbox/common/testkit"
)

// TestUnattendedStoreFromContainer: encryption at rest on by default
// (docs/secrets-at-rest.md, On by default). On a root host whose systemd
// host key exists (a private $SYSTEMD_CREDENTIAL_SECRET, never the host's),
// the first `credentials set` creates the keystore sealed by systemd-creds
// with no command and no passphrase; the SSH key is sealed when written; a
// container launched with terok-sandbox run gets the upstream's answer
// through the proxy and logs in to a real sshd through the agent, and no
// unlock was ever run. Root only: the host key is readable by root only.
func TestUnattendedStoreFromContainer(t *testing.T) {
	if _, err := exec.LookPath("systemd-creds"); err != nil {
		t.Skip("systemd-creds not installed")
	}
	if exec.Command("systemd-creds", "has-tpm2").Run() == nil {
		t.Skip("this host has a TPM2: the source would be tpm2")
	}
	r := H(t).Root(t)
	ctx := e2eCtx(t)
	agentBin, err := H(t).Bin("terok-ssh-agent")
	if err != nil {
		t.Fatal(err)
	}
	r.ExtraEnv = append(r.ExtraEnv, "SYSTEMD_CREDENTIAL_SECRET="+filepath.Join(r.Base, "credential.secret"))
	mustOK(t, "systemd-creds setup", r.Run(ctx, "systemd-creds", "setup"))
	up := newPxUpstream(t)
	proxyPort, agentPort := testkit.FreePort(t), testkit.FreePort(t)
	if err := r.WriteConfig(fmt.Sprintf("proxy_port = %d\nssh_agent_port = %d\n", proxyPort, agentPort)); err != nil {
		t.Fatal(err)
	}
	if err := r.Mkdir(r.Dirs.Credentials, 0o700); err != nil {
		t.Fatal(err)
	}
	routes := fmt.Sprintf(`{"e2e": {"upstream": "http://%s", "auth_header": "dynamic"}}`+"\n", up.addr)
	if err := r.WriteFile(filepath.Join(r.Dirs.Credentials, "routes.json"), []byte(routes), 0o600); err != nil {
		t.Fatal(err)
	}

	secret := "sk-e2e-UNATTENDED-7d21"
	set := mustOK(t, "credentials set", pxSandboxStdin(ctx, r, secret+"\n", "credentials", "set", "e2e"))
	if !strings.Contains(set.Stderr, "created the keystore") || !strings.Contains(set.Stderr, "systemd-creds (host)") {
		t.Fatalf("first set did not switch encryption on: %s", set)
	}
	sshInit := mustOK(t, "ssh init", r.Sandbox(ctx, "ssh", "init", "proj"))
	if strings.Contains(sshInit.Stderr, "plaintext") {
		t.Fatalf("ssh init: %s", sshInit)
	}
	st := mustOK(t, "status", r.Sandbox(ctx, "credentials", "status")).Stdout
	if !strings.Contains(st, "Mode:        encrypted") || !strings.Contains(st, "Credentials: 1 sealed, 0 plaintext") || !strings.Contains(st, "Key files:   1 sealed, 0 plaintext") {
		t.Fatalf("status:\n%s", st)
	}
	var keyPath string
	for _, line := range strings.Split(mustOK(t, "ssh list", r.Sandbox(ctx, "ssh", "list")).Stdout, "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[len(f)-1], "/") {
			keyPath = f[len(f)-1]
		}
	}
	if b, err := os.ReadFile(keyPath); err != nil || !bytes.HasPrefix(b, []byte("terok-enc:v1:")) {
		t.Fatalf("key file %q is not sealed (%v)", keyPath, err)
	}
	for _, f := range []string{"credentials.db", "credentials.db-wal", "credentials.keystore"} {
		if b, err := os.ReadFile(filepath.Join(r.Dirs.Credentials, f)); err == nil && bytes.Contains(b, []byte(secret)) {
			t.Fatalf("%s holds the secret", f)
		}
	}
	mainPub, err := os.ReadFile(keyPath + ".pub")
	if err != nil {
		t.Fatal(err)
	}

	// No unlock: the proxy (and the agent it supervises) open the key
	// through systemd-creds.
	mustOK(t, "proxy start", r.Sandbox(ctx, "proxy", "start"))
	t.Cleanup(func() { r.Sandbox(e2eCtx(t), "proxy", "stop") })
	pxTok := strings.TrimSpace(mustOK(t, "proxy token", r.Sandbox(ctx, "proxy", "token", "create", "proj", "task1", "--provider", "e2e")).Stdout)
	sshTok := strings.TrimSpace(mustOK(t, "ssh token", r.Sandbox(ctx, "ssh", "token", "create", "proj", "task1")).Stdout)
	logFile := filepath.Join(r.Dirs.State, "proxy", "credential-proxy.log")
	proxyLog := func() string { b, _ := os.ReadFile(logFile); return string(b) }
	sshdPort := sshStartSSHD(t, strings.TrimSpace(string(mainPub)))

	call := fmt.Sprintf(`curl -sS -o /tmp/body -w '%%{http_code}' -H "x-api-key: $ANTHROPIC_API_KEY" 'http://host.containers.internal:%d/v1/messages'`, proxyPort)
	sshc := "ssh -F /dev/null -p " + strconv.Itoa(sshdPort) + " -o BatchMode=yes -o StrictHostKeyChecking=no" +
		" -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o IdentitiesOnly=no -o ConnectTimeout=30"
	script := `export HOME=/tmp; echo "status=$(` + call + `)"; echo "body=$(cat /tmp/body)"
/opt/terok/terok-ssh-agent bridge -- sh -c 'ssh-add -L | wc -l | sed "s/^/keys=/"; $SSHC root@host.containers.internal echo "UNATTENDED-SSH-$((40+2))"'
echo '>> init complete'`
	name := r.Name("unattended")
	mustOK(t, "run", r.Sandbox(ctx, "run", "--shield-bypass", "--name", name, "--image", H(t).Image,
		"-v", agentBin+":/opt/terok/terok-ssh-agent:ro",
		"-e", "ANTHROPIC_API_KEY="+pxTok, "-e", "TEROK_SSH_AGENT_TOKEN="+sshTok,
		"-e", "TEROK_SSH_AGENT_PORT="+strconv.Itoa(agentPort), "-e", "SSHC="+sshc,
		"--", "bash", "-c", script))
	logs := mustOK(t, "logs", r.Sandbox(ctx, "logs", name, "--until-ready", "--timeout", "150"))
	for _, w := range []string{"status=200", `body={"e2e":"upstream-ok"}`, "keys=1", "UNATTENDED-SSH-42"} {
		if !strings.Contains(logs.Stdout, w) {
			t.Fatalf("container output lacks %q:\n%s\n%s\nproxy log:\n%s", w, logs.Stdout, logs.Stderr, proxyLog())
		}
	}
	if strings.Contains(logs.Stdout, secret) || strings.Contains(logs.Stdout, "PRIVATE KEY") {
		t.Fatal("a real secret reached the container")
	}
	up.mu.Lock()
	if len(up.seen) != 1 || up.seen[0].Get("X-Api-Key") != secret {
		t.Errorf("upstream saw %d requests", len(up.seen))
	}
	up.mu.Unlock()
	if strings.Contains(proxyLog(), secret) {
		t.Error("proxy log contains the secret")
	}
}
