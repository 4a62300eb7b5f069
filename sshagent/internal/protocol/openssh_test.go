package protocol

import (
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"terok.dev/sandbox/common/testkit"
)

// TestOpenSSHSessionBind: the real OpenSSH client, logging in to a real sshd
// on loopback with the agent's key, sends session-bind@openssh.com; the agent
// verifies it and binds the connection to that sshd's host key, and the login
// (signed by the agent) succeeds.
func TestOpenSSHSessionBind(t *testing.T) {
	sshd, err := exec.LookPath("/usr/sbin/sshd")
	if err != nil {
		t.Skip("sshd not installed")
	}
	f := newFixture(t)
	dir := t.TempDir()
	hostKey := filepath.Join(dir, "host")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostKey).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v %s", err, out)
	}
	hostPub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	hk, _, _, _, err := ssh.ParseAuthorizedKey(hostPub)
	if err != nil {
		t.Fatal(err)
	}
	auth := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(auth, ssh.MarshalAuthorizedKey(f.ed.Signer.PublicKey()), 0o600); err != nil {
		t.Fatal(err)
	}
	port := testkit.FreePort(t)
	conf := filepath.Join(dir, "sshd_config")
	cfg := strings.Join([]string{
		"Port " + strconv.Itoa(port), "ListenAddress 127.0.0.1", "HostKey " + hostKey,
		"AuthorizedKeysFile " + auth, "PasswordAuthentication no", "KbdInteractiveAuthentication no",
		"UsePAM no", "StrictModes no", "PidFile " + filepath.Join(dir, "sshd.pid"),
	}, "\n") + "\n"
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	var sshdLog strings.Builder
	srv := exec.Command(sshd, "-D", "-e", "-f", conf)
	srv.Stderr = &sshdLog
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { srv.Wait(); close(exited) }()
	t.Cleanup(func() { srv.Process.Kill(); <-exited })

	sock := filepath.Join(dir, "agent.sock")
	al, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { al.Close() })
	sessions := make(chan *Session, 8)
	go func() {
		for {
			c, err := al.Accept()
			if err != nil {
				return
			}
			go func() {
				s := &Session{}
				_ = ServeSession(c, f.agent, Limits{}, s)
				c.Close()
				sessions <- s
			}()
		}
	}()
	var out []byte
	for range 50 { // sshd starting
		cmd := exec.Command("ssh", "-F", "/dev/null", "-p", strconv.Itoa(port),
			"-o", "IdentityAgent="+sock, "-o", "IdentitiesOnly=no", "-o", "BatchMode=yes",
			"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
			"-o", "PubkeyAuthentication=yes", me.Username+"@127.0.0.1", "true")
		if out, err = cmd.CombinedOutput(); err == nil {
			break
		}
		select {
		case <-exited: // e.g. no /run/sshd privilege separation directory
			t.Skipf("sshd could not run here: %s", sshdLog.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err != nil {
		t.Fatalf("ssh login through the agent: %v\n%s", err, out)
	}
	want := ssh.FingerprintSHA256(hk)
	deadline := time.After(5 * time.Second)
	for {
		select {
		case s := <-sessions:
			if len(s.Binds) == 1 && s.Binds[0].Fingerprint == want && !s.Binds[0].Forwarding {
				return
			}
		case <-deadline:
			t.Fatalf("no agent connection bound to the sshd host key %s", want)
		}
	}
}
