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
		rig := newSecretsRig(t, r)
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

		logFile := rig.taskThroughDaemons(t, r, secret, string(mainPub), "SEALED", 2)
		mustOK(t, "proxy stop", r.Sandbox(ctx, "proxy", "stop"))

		// Locked: the daemons refuse to start and say what to run.
		mustOK(t, "lock", r.Sandbox(ctx, "credentials", "lock"))
		if res := r.Sandbox(ctx, "proxy", "start"); res.Code == 0 || !strings.Contains(res.Stdout+res.Stderr, "credentials unlock") {
			t.Fatalf("proxy start while locked: %s", res)
		}
		res := r.Run(ctx, rig.agentBin, "--db-path", filepath.Join(r.Dirs.Credentials, "credentials.db"),
			"--ssh-keys-file", filepath.Join(r.Dirs.Credentials, "ssh-keys.json"), "--port", strconv.Itoa(testkit.FreePort(t)))
		if res.Code == 0 || !strings.Contains(res.Stderr, "credentials unlock") {
			t.Fatalf("agent start while locked: %s", res)
		}
		if b, err := os.ReadFile(logFile); err == nil && bytes.Contains(b, []byte(secret)) {
			t.Error("proxy log contains the secret")
		}
	})
}

// secretsRig is what the secrets-at-rest tests (TestEncryptedStoreFromContainer,
// TestUnattendedStoreFromContainer) stand on: an upstream that the proxy's
// route "e2e" forwards to, the proxy's and the agent's ports in
// config.toml, and the agent binary a container runs as the bridge.
type secretsRig struct {
	up                   *pxUpstream
	proxyPort, agentPort int
	agentBin             string
}

func newSecretsRig(t *testing.T, r *testharness.Runner) secretsRig {
	t.Helper()
	agentBin, err := H(t).Bin("terok-ssh-agent")
	if err != nil {
		t.Fatal(err)
	}
	ports := testkit.FreePorts(t, 2)
	s := secretsRig{up: newPxUpstream(t), proxyPort: ports[0], agentPort: ports[1], agentBin: agentBin}
	if err := r.WriteConfig(fmt.Sprintf("proxy_port = %d\nssh_agent_port = %d\n", s.proxyPort, s.agentPort)); err != nil {
		t.Fatal(err)
	}
	if err := r.Mkdir(r.Dirs.Credentials, 0o700); err != nil {
		t.Fatal(err)
	}
	routes := fmt.Sprintf(`{"e2e": {"upstream": "http://%s", "auth_header": "dynamic"}}`+"\n", s.up.addr)
	if err := r.WriteFile(filepath.Join(r.Dirs.Credentials, "routes.json"), []byte(routes), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

// taskThroughDaemons starts the proxy (stopped when the test ends), issues
// a task's proxy and SSH agent tokens for project proj, and runs a
// container that calls the upstream through the proxy and, through the
// agent the proxy supervises, lists its keys and logs in to a real sshd
// that trusts pub. It checks that the container got the upstream's answer,
// saw wantKeys keys and printed tag-SSH-42 from the sshd, that no secret
// reached it, and that the upstream saw secret in the one request. It
// returns the proxy's log file (the agent logs there too).
func (s secretsRig) taskThroughDaemons(t *testing.T, r *testharness.Runner, secret, pub, tag string, wantKeys int) string {
	t.Helper()
	ctx := e2eCtx(t)
	mustOK(t, "proxy start", r.Sandbox(ctx, "proxy", "start"))
	t.Cleanup(func() { r.Sandbox(e2eCtx(t), "proxy", "stop") })
	pxTok := strings.TrimSpace(mustOK(t, "proxy token", r.Sandbox(ctx, "proxy", "token", "create", "proj", "task1", "--provider", "e2e")).Stdout)
	sshTok := strings.TrimSpace(mustOK(t, "ssh token", r.Sandbox(ctx, "ssh", "token", "create", "proj", "task1")).Stdout)
	logFile := filepath.Join(r.Dirs.State, "proxy", "credential-proxy.log")
	proxyLog := func() string { b, _ := os.ReadFile(logFile); return string(b) }
	sshdPort := sshStartSSHD(t, strings.TrimSpace(pub))

	call := fmt.Sprintf(`curl -sS -o /tmp/body -w '%%{http_code}' -H "x-api-key: $ANTHROPIC_API_KEY" 'http://host.containers.internal:%d/v1/messages'`, s.proxyPort)
	sshc := "ssh -F /dev/null -p " + strconv.Itoa(sshdPort) + " -o BatchMode=yes -o StrictHostKeyChecking=no" +
		" -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o IdentitiesOnly=no -o ConnectTimeout=30"
	script := `export HOME=/tmp; echo "status=$(` + call + `)"; echo "body=$(cat /tmp/body)"
/opt/terok/terok-ssh-agent bridge -- sh -c 'ssh-add -L | wc -l | sed "s/^/keys=/"; $SSHC root@host.containers.internal echo "` + tag + `-SSH-$((40+2))"'
echo '>> init complete'`
	name := r.Name(strings.ToLower(tag))
	mustOK(t, "run", r.Sandbox(ctx, "run", "--shield-bypass", "--name", name, "--image", H(t).Image,
		"-v", s.agentBin+":/opt/terok/terok-ssh-agent:ro",
		"-e", "ANTHROPIC_API_KEY="+pxTok, "-e", "TEROK_SSH_AGENT_TOKEN="+sshTok,
		"-e", "TEROK_SSH_AGENT_PORT="+strconv.Itoa(s.agentPort), "-e", "SSHC="+sshc,
		"--", "bash", "-c", script))
	logs := mustOK(t, "logs", r.Sandbox(ctx, "logs", name, "--until-ready", "--timeout", "150"))
	for _, w := range []string{"status=200", `body={"e2e":"upstream-ok"}`, "keys=" + strconv.Itoa(wantKeys), tag + "-SSH-42"} {
		if !strings.Contains(logs.Stdout, w) {
			t.Fatalf("container output lacks %q:\n%s\n%s\nproxy log:\n%s", w, logs.Stdout, logs.Stderr, proxyLog())
		}
	}
	if strings.Contains(logs.Stdout, secret) || strings.Contains(logs.Stdout, "PRIVATE KEY") {
		t.Fatal("a real secret reached the container")
	}
	s.up.mu.Lock()
	defer s.up.mu.Unlock()
	if len(s.up.seen) != 1 || s.up.seen[0].Get("X-Api-Key") != secret {
		t.Errorf("upstream saw %d requests, or not the secret", len(s.up.seen))
	}
	return logFile
}
