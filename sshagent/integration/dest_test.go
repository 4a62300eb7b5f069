package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/common/sshkeys"
	"terok.dev/sandbox/sshagent/internal/testkeys"
)

// The real OpenSSH client against two real sshd on loopback, each with its
// own host key, both trusting the key: a key bound to the first signs the
// login there and is refused for the second, for ssh-keygen (no binding)
// and through a forwarded agent; bound by fingerprint and by a host pattern
// resolved through the known_hosts file beside ssh-keys.json. Every
// refusal is audited with its reason (docs/ssh-agent.md, Destination-bound keys).
func TestDestinationBoundWithOpenSSH(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("starting sshd needs root")
	}
	f := newFixture(t)
	kd := testkeys.New(t, f.dir, "id_ed25519_d", "ed25519", "tk-main:d", testkeys.OpenSSH)
	one, two := startSSHD(t, kd), startSSHD(t, kd)
	one.trustHostKey(t)
	two.trustHostKey(t)
	hk1, hk2 := readHostKey(t, one), readHostKey(t, two)
	fp1, fp2 := ssh.FingerprintSHA256(hk1), ssh.FingerprintSHA256(hk2)
	if err := sshkeys.Register(f.keysFile, sshkeys.Pair{Project: "d", PrivateKey: kd.Private, PublicKey: kd.Public}, []string{fp1}); err != nil {
		t.Fatal(err)
	}
	tokD := f.token(t, "d")
	auditPath := filepath.Join(t.TempDir(), "ssh.jsonl")
	agentP, port := f.startAgent(t, "--audit-file", auditPath)
	_, sock := f.startBridge(t, tokD, port)
	env := []string{"SSH_AUTH_SOCK=" + sock}
	login := func(s *sshd, extra ...string) (string, error) {
		return run(t, env, "sh", "-c", s.sshCommand(extra...)+" root@127.0.0.1 echo logged-in")
	}
	check := func(label string) {
		t.Helper()
		if out, err := login(one); err != nil || !strings.Contains(out, "logged-in") {
			t.Fatalf("%s: login to the allowed sshd: %v\n%s\nagent log:\n%s", label, err, out, agentP.log)
		}
		if out, err := login(two); err == nil || !strings.Contains(out, "Permission denied") {
			t.Fatalf("%s: login to the other sshd: %v\n%s", label, err, out)
		}
	}
	check("fingerprint")

	// No binding: ssh-keygen -Y sign through the agent is refused.
	msg := filepath.Join(t.TempDir(), "msg")
	if err := os.WriteFile(msg, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	pub := filepath.Join(t.TempDir(), "d.pub") // no private key beside it
	if data, err := os.ReadFile(kd.Public); err != nil || os.WriteFile(pub, data, 0o600) != nil {
		t.Fatal(err)
	}
	if out, err := run(t, env, "ssh-keygen", "-Y", "sign", "-f", pub, "-n", "file", msg); err == nil {
		t.Fatalf("ssh-keygen -Y sign with a destination-bound key: %s", out)
	}
	// Forwarded: log in to the allowed sshd with the agent forwarded and from
	// there to the allowed sshd again, through the forwarded agent.
	inner := one.sshCommand() + " root@127.0.0.1 echo inner-logged-in"
	out, _ := run(t, env, "sh", "-c", one.sshCommand("-A")+" root@127.0.0.1 '"+inner+"'")
	if strings.Contains(out, "inner-logged-in") {
		t.Fatalf("signed through a forwarded agent:\n%s", out)
	}

	// By host pattern: the known_hosts beside ssh-keys.json names the hosts.
	kh := "host.one.test " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hk1))) + "\n" +
		"host.two.test " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hk2))) + "\n"
	if err := os.WriteFile(filepath.Join(filepath.Dir(f.keysFile), "ssh_known_hosts"), []byte(kh), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := sshkeys.SetDestinations(f.keysFile, sshkeys.KeyRef{Project: "d", PrivateKey: kd.Private}, []string{"*.one.test"}); err != nil {
		t.Fatal(err)
	}
	check("host pattern")

	rs := readAudit(t, auditPath)
	var okOne, refTwo, noBind, fwd int
	for _, r := range rs {
		if r.Project != "d" {
			continue
		}
		dest, _ := r.Fields["dest_fingerprint"].(string)
		switch {
		case r.Event == "sign" && r.Outcome == "ok" && dest == fp1 && r.Fields["forwarded"] == nil:
			okOne++
		case r.Reason == "destination" && dest == fp2:
			refTwo++
		case r.Reason == "destination" && dest == "":
			noBind++
		case r.Reason == "forwarded" && r.Fields["forwarded"] == true && dest == fp1:
			fwd++
		default:
			t.Errorf("unexpected record %+v", r)
		}
		if r.Fields["key_fingerprint"] != ssh.FingerprintSHA256(kd.Signer.PublicKey()) {
			t.Errorf("record without the key's fingerprint: %+v", r)
		}
	}
	// The outer login of the forwarding test is one more signature to sshd one.
	if okOne != 3 || refTwo != 2 || noBind != 1 || fwd != 1 {
		t.Fatalf("records: ok@one=%d refused@two=%d unbound=%d forwarded=%d, want 3 2 1 1\n%s", okOne, refTwo, noBind, fwd, agentP.log)
	}
}

func (f *fixture) token(t *testing.T, project string) string {
	t.Helper()
	tok, err := f.db.CreateToken(context.Background(), creddb.TokenSpec{Project: project, Task: "t1", Set: creddb.DefaultSet, Provider: creddb.SSHProvider})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// A destinations member the agent cannot use keeps it from starting.
func TestBadDestinationsRefuseStart(t *testing.T) {
	f := newFixture(t)
	data := `{"a": [{"private_key": "` + f.mainA.Private + `", "public_key": "` + f.mainA.Public + `", "destinations": ["bad host"]}]}`
	if err := os.WriteFile(f.keysFile, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, nil, agentBin, "--db-path", f.dbPath, "--ssh-keys-file", f.keysFile, "--port", "1", "--audit-file=off")
	<-p.exited
	if ee, ok := p.err.(interface{ ExitCode() int }); !ok || ee.ExitCode() != 1 || !strings.Contains(p.log.String(), "unusable destinations") {
		t.Fatalf("agent with bad destinations: %v\n%s", p.err, p.log)
	}
}
