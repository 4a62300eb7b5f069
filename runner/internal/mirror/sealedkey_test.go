package mirror

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"terok.dev/sandbox/common/secretstore"
	"terok.dev/sandbox/common/sshkeys"
	"terok.dev/sandbox/common/testkit"
)

// sealedKeyManager writes a sealed project key (and its .pub) and returns a
// manager that opens it with the store's vault, and the public key line.
func sealedKeyManager(t *testing.T, upstream string) (*Manager, string) {
	t.Helper()
	creds := t.TempDir()
	_, kek, err := secretstore.Create(creds, []byte("mirror test passphrase"), secretstore.KDFParams{Time: 1, MemoryKiB: 8 * 1024, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	v := secretstore.OpenVaultWithKEK(creds, kek)
	hostDir := t.TempDir()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(priv, "tk-main:p")
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(hostDir, "id_ed25519_p")
	w, err := v.BeginWrite()
	if err != nil {
		t.Fatal(err)
	}
	content, err := sshkeys.EncodePrivateKey(w, keyPath, pem.EncodeToMemory(block))
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, content, 0o600); err != nil {
		t.Fatal(err)
	}
	sp, _ := ssh.NewPublicKey(pub)
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp)))
	m := New(Options{ProjectID: "p", GatePath: filepath.Join(t.TempDir(), "p.git"), UpstreamURL: upstream,
		SSHHostDir: hostDir, SSHKeyName: "id_ed25519_p", Vault: v,
		Environ: []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}})
	return m, line
}

func TestSealedKeyAgentServesTheKeyOnlyDuringTheCommand(t *testing.T) {
	if _, err := exec.LookPath("ssh-add"); err != nil {
		t.Skip("ssh-add not installed")
	}
	m, line := sealedKeyManager(t, "")
	env, stop, err := m.sshEnv()
	if err != nil {
		t.Fatal(err)
	}
	var sock string
	for _, kv := range env {
		if s, ok := strings.CutPrefix(kv, "SSH_AUTH_SOCK="); ok {
			sock = s
		}
	}
	if fi, err := os.Stat(filepath.Dir(sock)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("agent directory: %v %v", fi, err)
	}
	cmd := exec.Command("ssh-add", "-L")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), line) {
		t.Fatalf("ssh-add -L: %v %q, want %q", err, out, line)
	}
	stop()
	if _, err := os.Stat(filepath.Dir(sock)); !os.IsNotExist(err) {
		t.Fatal("agent directory left behind")
	}
	// Without a usable vault: a clear error, no agent.
	m.o.Vault = secretstore.OpenVault(t.TempDir())
	if _, _, err := m.sshEnv(); err == nil || !strings.Contains(err.Error(), "no keystore") {
		t.Fatalf("sealed key without its keystore: %v", err)
	}
}

// TestCompareOverSSHWithSealedKey: ls-remote against a real sshd on
// 127.0.0.1 authenticates with the sealed project key.
func TestCompareOverSSHWithSealedKey(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("sshd needs root")
	}
	if _, err := os.Stat("/usr/sbin/sshd"); err != nil {
		t.Skip("sshd not installed")
	}
	repo := filepath.Join(t.TempDir(), "up.git")
	work := repo + "-work"
	for _, c := range [][]string{
		{"git", "init", "-q", "--bare", "-b", "main", repo},
		{"git", "init", "-q", "-b", "main", work},
		{"git", "-C", work, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "--allow-empty", "-m", "x"},
		{"git", "-C", work, "push", "-q", repo, "main"},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", c, err, out)
		}
	}
	head, _ := exec.Command("git", "-C", work, "rev-parse", "HEAD").Output()
	m, line := sealedKeyManager(t, "")
	port := startSSHD(t, line)
	m.o.UpstreamURL = fmt.Sprintf("ssh://root@127.0.0.1:%d%s", port, repo)
	if out, err := exec.Command("git", "clone", "-q", "--mirror", repo, m.o.GatePath).CombinedOutput(); err != nil {
		t.Fatalf("gate mirror: %v\n%s", err, out)
	}
	st := m.Compare(context.Background(), "main")
	if st.Error != nil || st.UpstreamHead == nil || *st.UpstreamHead != strings.TrimSpace(string(head)) {
		e := ""
		if st.Error != nil {
			e = *st.Error
		}
		t.Fatalf("compare over ssh with the sealed key: %+v (%s)", st, e)
	}
}

// startSSHD runs OpenSSH's sshd on 127.0.0.1 trusting exactly one key.
func startSSHD(t *testing.T, trusted string) int {
	t.Helper()
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	_, hk, _ := ed25519.GenerateKey(rand.Reader)
	block, _ := ssh.MarshalPrivateKey(hk, "host")
	port := testkit.FreePort(t)
	hostKey, ak, conf := filepath.Join(dir, "host_key"), filepath.Join(dir, "authorized_keys"), filepath.Join(dir, "sshd_config")
	for p, data := range map[string]string{
		hostKey: string(pem.EncodeToMemory(block)),
		ak:      trusted + "\n",
		conf: fmt.Sprintf("Port %d\nListenAddress 127.0.0.1\nHostKey %s\nPidFile none\nAuthorizedKeysFile %s\n"+
			"StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"+
			"PermitRootLogin prohibit-password\nAllowUsers root\n", port, hostKey, ak),
	} {
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", conf)
	cmd.WaitDelay = 5 * time.Second
	se, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(se)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "Server listening") {
				ready <- true
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatal("sshd exited before listening")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("sshd did not start")
	}
	return port
}
