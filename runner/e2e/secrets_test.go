//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"terok.dev/sandbox/common/testkit"
	"terok.dev/sandbox/runner/internal/testharness"
)

// TestEncryptedStoreFromContainer: with the store encrypted
// (docs/secrets-at-rest.md), a container launched with terok-sandbox run
// still gets the upstream's answer through the proxy (the real credential
// opened in the proxy's memory only) and logs in to a real sshd through the
// agent the proxy supervises, with a sealed private key; the database and the key file hold no
// secret, and with the store locked neither daemon starts. Root and
// rootless.
func TestEncryptedStoreFromContainer(t *testing.T) {
	H(t).Each(t, func(t *testing.T, r *testharness.Runner) {
		ctx := e2eCtx(t)
		agentBin, err := H(t).Bin("terok-ssh-agent")
		if err != nil {
			t.Fatal(err)
		}
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
		// A host without a key source that needs no passphrase (the
		// unattended default is TestUnattendedStoreFromContainer): the
		// host key is a private path that does not exist.
		r.ExtraEnv = append(r.ExtraEnv, "SYSTEMD_CREDENTIAL_SECRET="+filepath.Join(r.Base, "absent-credential.secret"))
		passFile := filepath.Join(r.Base, "passphrase")
		if err := r.WriteFile(passFile, []byte("e2e operator passphrase "+r.Kind+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Sandbox(e2eCtx(t), "credentials", "lock") })

		secret := "sk-e2e-SEALED-" + r.Kind + "-91c0"
		mustOK(t, "credentials set", pxSandboxStdin(ctx, r, secret+"\n", "credentials", "set", "e2e"))
		mustOK(t, "ssh init", r.Sandbox(ctx, "ssh", "init", "proj")) // plaintext key, migrated below
		mustOK(t, "unlock", r.Sandbox(ctx, "credentials", "unlock", "--passphrase-file", passFile))
		mig := mustOK(t, "migrate", r.Sandbox(ctx, "credentials", "migrate"))
		if !strings.HasPrefix(mig.Stdout, "Encrypted 1 credentials and 1 SSH key files") {
			t.Fatalf("migrate: %s", mig.Stdout)
		}
		mustOK(t, "ssh add-key", r.Sandbox(ctx, "ssh", "add-key", "proj", "--key-type", "rsa")) // sealed when written
		var keyPaths []string
		for _, line := range strings.Split(mustOK(t, "ssh list", r.Sandbox(ctx, "ssh", "list")).Stdout, "\n") {
			if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[len(f)-1], "/") {
				keyPaths = append(keyPaths, f[len(f)-1])
			}
		}
		if len(keyPaths) != 2 {
			t.Fatalf("ssh list paths: %v", keyPaths)
		}
		for _, p := range keyPaths {
			b, err := os.ReadFile(p)
			if err != nil || !bytes.HasPrefix(b, []byte("terok-enc:v1:")) || bytes.Contains(b, []byte("PRIVATE KEY")) {
				t.Fatalf("key file %s is not sealed (%v)", p, err)
			}
		}
		for _, f := range []string{"credentials.db", "credentials.db-wal"} {
			if b, err := os.ReadFile(filepath.Join(r.Dirs.Credentials, f)); err == nil && bytes.Contains(b, []byte(secret)) {
				t.Fatalf("%s holds the secret", f)
			}
		}
		mainPub, err := os.ReadFile(keyPaths[0] + ".pub")
		if err != nil {
			t.Fatal(err)
		}

		mustOK(t, "proxy start", r.Sandbox(ctx, "proxy", "start"))
		t.Cleanup(func() { r.Sandbox(e2eCtx(t), "proxy", "stop") })
		pxTok := strings.TrimSpace(mustOK(t, "proxy token", r.Sandbox(ctx, "proxy", "token", "create", "proj", "task1", "--provider", "e2e")).Stdout)
		sshTok := strings.TrimSpace(mustOK(t, "ssh token", r.Sandbox(ctx, "ssh", "token", "create", "proj", "task1")).Stdout)
		// The proxy supervises the agent on ssh_agent_port; both log here.
		logFile := filepath.Join(r.Dirs.State, "proxy", "credential-proxy.log")
		agentLog := func() string { b, _ := os.ReadFile(logFile); return string(b) }
		sshdPort := sshStartSSHD(t, strings.TrimSpace(string(mainPub)))

		call := fmt.Sprintf(`curl -sS -o /tmp/body -w '%%{http_code}' -H "x-api-key: $ANTHROPIC_API_KEY" 'http://host.containers.internal:%d/v1/messages'`, proxyPort)
		sshc := "ssh -F /dev/null -p " + strconv.Itoa(sshdPort) + " -o BatchMode=yes -o StrictHostKeyChecking=no" +
			" -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o IdentitiesOnly=no -o ConnectTimeout=30"
		script := `export HOME=/tmp; echo "status=$(` + call + `)"; echo "body=$(cat /tmp/body)"
/opt/terok/terok-ssh-agent bridge -- sh -c 'ssh-add -L | wc -l | sed "s/^/keys=/"; $SSHC root@host.containers.internal echo "SEALED-SSH-$((40+2))"'
echo '>> init complete'`
		name := r.Name("sealed")
		mustOK(t, "run", r.Sandbox(ctx, "run", "--shield-bypass", "--name", name, "--image", H(t).Image,
			"-v", agentBin+":/opt/terok/terok-ssh-agent:ro",
			"-e", "ANTHROPIC_API_KEY="+pxTok, "-e", "TEROK_SSH_AGENT_TOKEN="+sshTok,
			"-e", "TEROK_SSH_AGENT_PORT="+strconv.Itoa(agentPort), "-e", "SSHC="+sshc,
			"--", "bash", "-c", script))
		logs := mustOK(t, "logs", r.Sandbox(ctx, "logs", name, "--until-ready", "--timeout", "150"))
		out := logs.Stdout
		for _, w := range []string{"status=200", `body={"e2e":"upstream-ok"}`, "keys=2", "SEALED-SSH-42"} {
			if !strings.Contains(out, w) {
				t.Fatalf("container output lacks %q:\n%s\n%s\nagent:\n%s", w, out, logs.Stderr, agentLog())
			}
		}
		if strings.Contains(out, secret) || strings.Contains(out, "PRIVATE KEY") {
			t.Fatal("a real secret reached the container")
		}
		up.mu.Lock()
		if len(up.seen) != 1 || up.seen[0].Get("X-Api-Key") != secret {
			t.Errorf("upstream saw %d requests, x-api-key %q", len(up.seen), up.seen[0].Get("X-Api-Key"))
		}
		up.mu.Unlock()
		mustOK(t, "proxy stop", r.Sandbox(ctx, "proxy", "stop"))

		// Locked: the daemons refuse to start and say what to run.
		mustOK(t, "lock", r.Sandbox(ctx, "credentials", "lock"))
		if res := r.Sandbox(ctx, "proxy", "start"); res.Code == 0 || !strings.Contains(res.Stdout+res.Stderr, "credentials unlock") {
			t.Fatalf("proxy start while locked: %s", res)
		}
		res := r.Run(ctx, agentBin, "--db-path", filepath.Join(r.Dirs.Credentials, "credentials.db"),
			"--ssh-keys-file", filepath.Join(r.Dirs.Credentials, "ssh-keys.json"), "--port", strconv.Itoa(testkit.FreePort(t)))
		if res.Code == 0 || !strings.Contains(res.Stderr, "credentials unlock") {
			t.Fatalf("agent start while locked: %s", res)
		}
		if b, err := os.ReadFile(logFile); err == nil && bytes.Contains(b, []byte(secret)) {
			t.Error("proxy log contains the secret")
		}
	})
}
