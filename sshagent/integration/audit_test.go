package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/common/taskend"
	"terok.dev/sandbox/common/testkit"
	"terok.dev/sandbox/sshagent/internal/testkeys"
)

func readAudit(t *testing.T, path string) []audit.Record {
	t.Helper()
	rs, err := audit.ReadFile(path, func(msg string) { t.Errorf("audit file: %s", msg) })
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// find returns the records of an event/reason in order.
func find(rs []audit.Record, event, reason string) []audit.Record {
	var out []audit.Record
	for _, r := range rs {
		if r.Event == event && r.Reason == reason {
			out = append(out, r)
		}
	}
	return out
}

// noSecrets fails when any of the given secrets (or a 24-byte piece of one)
// is in data.
func noSecrets(t *testing.T, what string, data []byte, secrets ...[]byte) {
	t.Helper()
	for _, s := range secrets {
		for i := 0; i+24 <= len(s); i += 24 {
			if bytes.Contains(data, s[i:i+24]) {
				t.Fatalf("%s holds secret material %q", what, s[i:i+24])
			}
		}
	}
}

// privateBody is the base64 body of a PEM private key file, the part that
// holds the key.
func privateBody(t *testing.T, p testkeys.Pair) []byte {
	t.Helper()
	data, err := os.ReadFile(p.Private)
	if err != nil {
		t.Fatal(err)
	}
	var body []byte
	for _, l := range strings.Split(string(data), "\n") {
		if l != "" && !strings.HasPrefix(l, "-----") {
			body = append(body, l...)
		}
	}
	return body
}

// One record per signature and per refusal, with the documented members,
// written by the real agent for the real ssh-keygen and ssh clients
// (docs/audit.md, Channel ssh); neither the private key nor the signed data
// is in any record or log line.
func TestAuditRecords(t *testing.T) {
	f := newFixture(t)
	auditPath := filepath.Join(t.TempDir(), "audit", "ssh.jsonl")
	agentP, port := f.startAgent(t, "--audit-file", auditPath)
	_, sockA := f.startBridge(t, f.tokA, port)
	envA := []string{"SSH_AUTH_SOCK=" + sockA}

	secretData := []byte("the-signed-data-must-never-be-recorded-0123456789abcdef\n")
	msg := filepath.Join(t.TempDir(), "message")
	if err := os.WriteFile(msg, secretData, 0o600); err != nil {
		t.Fatal(err)
	}
	// A signature with the project's key, through the agent (-f names the
	// public key, so ssh-keygen asks the agent).
	if out, err := run(t, envA, "ssh-keygen", "-Y", "sign", "-f", f.mainA.Public, "-n", "file", msg); err != nil {
		t.Fatalf("ssh-keygen -Y sign: %v\n%s\n%s", err, out, agentP.log)
	}
	// Another project's key: refused.
	// Another project's key: refused (ssh-keygen does not ask for a key the
	// agent does not list, so a client that does).
	if _, err := dialUnix(t, sockA).Sign(f.mainB.Signer.PublicKey(), secretData); err == nil {
		t.Fatal("signed with project b's key")
	}
	// An unknown token: the connection is refused.
	_, sockX := f.startBridge(t, "terok-p-ffffffffffffffffffffffffffffffff", port)
	if out, err := run(t, []string{"SSH_AUTH_SOCK=" + sockX}, "ssh-add", "-L"); err == nil {
		t.Fatalf("unknown token listed keys: %s", out)
	}
	var srv *sshd
	if os.Geteuid() == 0 {
		srv = startSSHD(t, f.mainA)
		srv.trustHostKey(t)
		if out, err := run(t, envA, "sh", "-c", srv.sshCommand()+" root@127.0.0.1 true"); err != nil {
			t.Fatalf("ssh: %v\n%s\n%s", err, out, agentP.log)
		}
	}

	rs := readAudit(t, auditPath)
	fpA := ssh.FingerprintSHA256(f.mainA.Signer.PublicKey())
	signs := find(rs, "sign", "")
	if len(signs) == 0 {
		t.Fatalf("no sign record in %v", rs)
	}
	s := signs[0]
	if s.Channel != "ssh" || s.Outcome != "ok" || s.Project != "a" || s.Task != "t1" ||
		s.TokenPrefix != f.tokA[:12] || s.Fields["key_fingerprint"] != fpA ||
		s.Fields["key_comment"] != "tk-main:a" || s.Fields["sig_algorithm"] != ssh.KeyAlgoED25519 ||
		!strings.HasPrefix(s.Fields["remote"].(string), "127.0.0.1:") || len(s.Fields["data_sha256"].(string)) != 64 {
		t.Fatalf("sign record %+v", s)
	}
	if _, ok := s.Fields["dest_fingerprint"]; ok {
		t.Fatalf("ssh-keygen binds no session, but the record names a destination: %+v", s)
	}
	sum := sha256.Sum256(secretData)
	if s.Fields["data_sha256"] == hex.EncodeToString(sum[:]) {
		t.Fatal("data_sha256 is the file's hash; ssh-keygen signs a SSHSIG blob, so the agent cannot have seen the file")
	}
	noKey := find(rs, "refused", "no-key")
	if len(noKey) != 1 || noKey[0].Outcome != "refused" || noKey[0].Fields["key_fingerprint"] != ssh.FingerprintSHA256(f.mainB.Signer.PublicKey()) ||
		noKey[0].Project != "a" || noKey[0].Fields["data_sha256"] == nil {
		t.Fatalf("no-key records %+v", noKey)
	}
	unknown := find(rs, "refused", "unknown-token")
	if len(unknown) != 1 || unknown[0].TokenPrefix != "terok-p-ffff" || unknown[0].Project != "" {
		t.Fatalf("unknown-token records %+v", unknown)
	}
	if srv != nil {
		hk := readHostKey(t, srv)
		if len(signs) != 2 || signs[1].Fields["dest_fingerprint"] != ssh.FingerprintSHA256(hk) || signs[1].Fields["forwarded"] != nil {
			t.Fatalf("ssh login records %+v, want one bound to %s", signs, ssh.FingerprintSHA256(hk))
		}
	}

	raw, err := os.ReadFile(auditPath)
	if err != nil {
		t.Fatal(err)
	}
	for what, data := range map[string][]byte{"audit file": raw, "agent log": []byte(agentP.log.String())} {
		noSecrets(t, what, data, privateBody(t, f.mainA), privateBody(t, f.mainB), secretData)
		if bytes.Contains(data, []byte(f.tokA[12:])) {
			t.Fatalf("%s holds more of a token than its prefix", what)
		}
	}
	if st, err := os.Stat(auditPath); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("audit file mode: %v %v", st, err)
	}
}

func readHostKey(t *testing.T, s *sshd) ssh.PublicKey {
	t.Helper()
	data, err := os.ReadFile(s.hostKey)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(data)
	if err != nil {
		t.Fatal(err)
	}
	return signer.PublicKey()
}

// Without --audit-file the records go to the state dir's audit/ssh.jsonl;
// --audit-file=off writes none; an audit file that cannot be opened keeps
// the agent from starting (exit 1).
func TestAuditFileDefaultOffAndBroken(t *testing.T) {
	f := newFixture(t)
	state := t.TempDir()
	p := startProc(t, []string{"TEROK_SANDBOX_STATE_DIR=" + state}, agentBin, "--db-path", f.dbPath,
		"--ssh-keys-file", f.keysFile, "--port", strconv.Itoa(testkit.FreePort(t)), "--log-level", "DEBUG")
	line := p.log.wait(t, "listening")
	want := filepath.Join(state, "audit", "ssh.jsonl")
	if !strings.Contains(line, "audit_file="+want) {
		t.Fatalf("listening line %q does not name %s", line, want)
	}
	if st, err := os.Stat(want); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("default audit file: %v %v", st, err)
	}

	offState := t.TempDir()
	p = startProc(t, []string{"TEROK_SANDBOX_STATE_DIR=" + offState}, agentBin, "--db-path", f.dbPath,
		"--ssh-keys-file", f.keysFile, "--port", strconv.Itoa(testkit.FreePort(t)), "--audit-file=off")
	if line := p.log.wait(t, "listening"); !strings.Contains(line, "audit_file=off") {
		t.Fatalf("listening line %q", line)
	}
	if _, err := os.Stat(filepath.Join(offState, "audit")); !os.IsNotExist(err) {
		t.Fatalf("--audit-file=off created the audit directory: %v", err)
	}

	// audit = false in the configuration (docs/audit.md, Files).
	cfgDir, offState2 := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(cfgDir, "config.toml"), []byte("audit = false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p = startProc(t, []string{"TEROK_SANDBOX_STATE_DIR=" + offState2, "TEROK_SANDBOX_CONFIG_DIR=" + cfgDir}, agentBin,
		"--db-path", f.dbPath, "--ssh-keys-file", f.keysFile, "--port", strconv.Itoa(testkit.FreePort(t)))
	if line := p.log.wait(t, "listening"); !strings.Contains(line, "audit_file=off") {
		t.Fatalf("audit = false: listening line %q", line)
	}

	blocker := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	p = startProc(t, nil, agentBin, "--db-path", f.dbPath, "--ssh-keys-file", f.keysFile, "--port", strconv.Itoa(testkit.FreePort(t)),
		"--audit-file", filepath.Join(blocker, "ssh.jsonl"))
	<-p.exited
	if ee, ok := p.err.(interface{ ExitCode() int }); !ok || ee.ExitCode() != 1 || !strings.Contains(p.log.String(), "audit") {
		t.Fatalf("broken audit file: %v\n%s", p.err, p.log)
	}
}

// Token expiry (docs/ssh-agent.md, Token expiry): an expired token is
// refused like a revoked one, and a session whose token expires while it is
// open signs no more; both audited with reason expired.
//
// The soon token must sign once before its stamp (whole seconds) passes;
// under load a short margin can run out first, so an attempt that ran past
// the stamp before that signature says nothing and is made again with a
// fresh agent and twice the margin (the margin is a liveness bound; the
// refusal after the stamp is checked every time).
func TestExpiredToken(t *testing.T) {
	for margin := 2 * time.Second; !expiredToken(t, margin); margin *= 2 {
		if margin >= 32*time.Second {
			t.Fatalf("no signature within %s of the token's creation", margin)
		}
		t.Logf("the signature outlasted the soon token (%s); again with %s", margin, 2*margin)
	}
}

// expiredToken is one attempt of TestExpiredToken with the soon token
// living at least margin; false when it could not sign in time.
func expiredToken(t *testing.T, margin time.Duration) bool {
	f := newFixture(t)
	auditPath := filepath.Join(t.TempDir(), "ssh.jsonl")
	_, port := f.startAgent(t, "--audit-file", auditPath)
	past, err := f.db.CreateToken(context.Background(), creddb.TokenSpec{Project: "a", Task: "old", Set: creddb.DefaultSet,
		Provider: creddb.SSHProvider, Expires: time.Now().Add(-time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dialTerok(t, port, past).List(); err == nil {
		t.Fatal("expired token listed keys")
	}
	exp := time.Unix(time.Now().Add(margin+time.Second).Unix(), 0) // whole seconds, at least margin away
	soon, err := f.db.CreateToken(context.Background(), creddb.TokenSpec{Project: "a", Task: "soon", Set: creddb.DefaultSet,
		Provider: creddb.SSHProvider, Expires: exp})
	if err != nil {
		t.Fatal(err)
	}
	cl := dialTerok(t, port, soon)
	pub := f.mainA.Signer.PublicKey()
	if _, err := cl.Sign(pub, []byte("before")); err != nil {
		if !time.Now().Before(exp) {
			return false
		}
		t.Fatalf("sign before expiry: %v", err)
	}
	// Wait for the clock to pass the stamp (stored in whole seconds).
	time.Sleep(time.Until(exp.Truncate(time.Second).Add(100 * time.Millisecond)))
	if _, err := cl.Sign(pub, []byte("after")); err == nil {
		t.Fatal("signed after the token expired")
	}
	rs := readAudit(t, auditPath)
	got := find(rs, "refused", "expired")
	if len(got) != 2 || got[0].Task != "old" || got[0].TokenPrefix != past[:12] || got[1].Task != "soon" ||
		got[1].Fields["key_fingerprint"] != ssh.FingerprintSHA256(pub) {
		t.Fatalf("expired records %+v", got)
	}
	if len(find(rs, "sign", "")) != 1 {
		t.Fatalf("records %+v", rs)
	}
	return true
}

// Tokens that die with their task (docs/security-model.md): a token bound to
// a container signs while the container runs; once its end is recorded in
// the task-ends directory the open session signs no more and a new
// handshake is refused, both audited with reason task-gone and the
// container; an unbound token of the project keeps signing.
func TestTaskGoneToken(t *testing.T) {
	f := newFixture(t)
	auditPath := filepath.Join(t.TempDir(), "ssh.jsonl")
	ends := filepath.Join(t.TempDir(), "task-ends")
	_, port := f.startAgent(t, "--audit-file", auditPath, "--task-ends", ends)
	mk := func(task, container string) string {
		tok, err := f.db.CreateToken(context.Background(), creddb.TokenSpec{Project: "a", Task: task, Set: creddb.DefaultSet,
			Provider: creddb.SSHProvider, Container: container})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	bound, free := mk("t1", "a-t1"), mk("t2", "")
	pub := f.mainA.Signer.PublicKey()
	cl := dialTerok(t, port, bound)
	if _, err := cl.Sign(pub, []byte("running")); err != nil {
		t.Fatalf("sign while the container runs: %v", err)
	}
	if err := taskend.Record(ends, taskend.End{Container: "a-t1", Reason: taskend.ReasonStopped}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Sign(pub, []byte("after")); err == nil {
		t.Fatal("open session signed after its container ended")
	}
	if _, err := dialTerok(t, port, bound).List(); err == nil {
		t.Fatal("token of an ended container listed keys")
	}
	if _, err := dialTerok(t, port, free).Sign(pub, []byte("free")); err != nil {
		t.Fatalf("unbound token: %v", err)
	}
	rs := readAudit(t, auditPath)
	got := find(rs, "refused", "task-gone")
	if len(got) != 2 || got[0].Task != "t1" || got[0].Fields["key_fingerprint"] != ssh.FingerprintSHA256(pub) ||
		got[1].Task != "t1" || got[1].Container != "a-t1" || got[1].TokenPrefix != bound[:12] || got[1].Fields["task_end"] != "stopped" {
		t.Fatalf("task-gone records %+v", got)
	}
	if len(find(rs, "sign", "")) != 2 {
		t.Fatalf("records %+v", rs)
	}
}
