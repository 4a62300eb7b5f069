//go:build e2e

package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
	r.ExtraEnv = append(r.ExtraEnv, "SYSTEMD_CREDENTIAL_SECRET="+filepath.Join(r.Base, "credential.secret"))
	mustOK(t, "systemd-creds setup", r.Run(ctx, "systemd-creds", "setup"))
	rig := newSecretsRig(t, r)

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
	logFile := rig.taskThroughDaemons(t, r, secret, string(mainPub), "UNATTENDED", 1)
	if b, err := os.ReadFile(logFile); err == nil && bytes.Contains(b, []byte(secret)) {
		t.Error("proxy log contains the secret")
	}
}
