//go:build e2e

package e2e

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/common/testkit"
	"terok.dev/sandbox/runner/internal/testharness"
)

// A container started with `terok-sandbox run` runs the in-container bridge
// (bin/terok-ssh-agent mounted read-only) with its task's SSH phantom token:
// ssh-add -L shows exactly the project's keys, ssh to a real sshd on the
// host's 127.0.0.1 (reached as host.containers.internal) authenticates
// through the agent, git clone over ssh works, and another project's token
// sees only that project's key; root and rootless.
func TestSSHAgentFromContainer(t *testing.T) {
	H(t).Each(t, func(t *testing.T, r *testharness.Runner) {
		ctx := e2eCtx(t)
		agentBin, err := H(t).Bin("terok-ssh-agent")
		if err != nil {
			t.Fatal(err)
		}
		agentPort := testkit.FreePort(t)
		if err := r.WriteConfig("ssh_agent_port = " + strconv.Itoa(agentPort) + "\n"); err != nil {
			t.Fatal(err)
		}
		mustOK(t, "ssh init proj", r.Sandbox(ctx, "ssh", "init", "proj"))
		mustOK(t, "ssh add-key proj", r.Sandbox(ctx, "ssh", "add-key", "proj", "--key-type", "rsa"))
		mustOK(t, "ssh init other", r.Sandbox(ctx, "ssh", "init", "other"))
		var rows []struct{ Project, Key, Path string }
		res := mustOK(t, "ssh list", r.Sandbox(ctx, "ssh", "list", "--json"))
		if err := json.Unmarshal([]byte(res.Stdout), &rows); err != nil || len(rows) != 3 {
			t.Fatalf("ssh list: %v\n%s", err, res)
		}
		pubOf := func(project string) []string {
			var out []string
			for _, row := range rows {
				if row.Project == project {
					b, err := os.ReadFile(row.Path + ".pub")
					if err != nil {
						t.Fatal(err)
					}
					out = append(out, strings.TrimSpace(string(b)))
				}
			}
			return out
		}
		projKeys, otherKeys := pubOf("proj"), pubOf("other")
		tok := strings.TrimSpace(mustOK(t, "token", r.Sandbox(ctx, "ssh", "token", "create", "proj", "task-1")).Stdout)
		otherTok := strings.TrimSpace(mustOK(t, "token", r.Sandbox(ctx, "ssh", "token", "create", "other", "task-1")).Stdout)

		// The agent, as the runner's user, on the configured port.
		agent := r.Command(ctx, agentBin, "--db-path", filepath.Join(r.Dirs.Credentials, "credentials.db"),
			"--ssh-keys-file", filepath.Join(r.Dirs.Credentials, "ssh-keys.json"), "--port", strconv.Itoa(agentPort))
		agentLog := sshStartLogged(t, agent, "terok-ssh-agent listening")

		// sshd on the host's loopback trusting proj's main key, serving a repository.
		sshdPort := sshStartSSHD(t, projKeys[0])
		repo := filepath.Join(r.Base, "sshrepo.git")
		for _, c := range [][]string{
			{"git", "init", "-q", "--bare", "-b", "main", repo},
			{"git", "init", "-q", "-b", "main", repo + "-work"},
			{"git", "-C", repo + "-work", "-c", "user.name=e2e", "-c", "user.email=e2e@example.invalid", "commit", "-q", "--allow-empty", "-m", "over ssh"},
			{"git", "-C", repo + "-work", "push", "-q", repo, "main"},
		} {
			if out, err := exec.CommandContext(ctx, c[0], c[1:]...).CombinedOutput(); err != nil {
				t.Fatalf("%v: %v\n%s", c, err, out)
			}
		}

		name := r.Name("ssh")
		script := `set -u; export HOME=/tmp
B=/opt/terok/terok-ssh-agent
$B bridge -- sh -c 'echo "== keys"; ssh-add -L; echo "== end"
  $SSHC root@host.containers.internal echo "SSH-$((40+2))"
  GIT_SSH_COMMAND="$SSHC" git clone -q "root@host.containers.internal:$REPO" /tmp/clone && git -C /tmp/clone log --format=CLONED:%s'
echo "bridge exit $?"
TEROK_SSH_AGENT_TOKEN=$OTHER_TOKEN $B bridge --listen /tmp/other/agent.sock -- sh -c 'echo "== other"; ssh-add -L; echo "== end other"
  $SSHC root@host.containers.internal echo OTHER-LOGGED-IN || echo OTHER-REFUSED'
echo '>> init complete'`
		sshc := "ssh -F /dev/null -p " + strconv.Itoa(sshdPort) + " -o BatchMode=yes -o StrictHostKeyChecking=no" +
			" -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o IdentitiesOnly=no -o ConnectTimeout=30"
		mustOK(t, "run", r.Sandbox(ctx, "run", "--shield-bypass", "--name", name, "--image", H(t).Image,
			"-v", agentBin+":/opt/terok/terok-ssh-agent:ro",
			"-e", "TEROK_SSH_AGENT_TOKEN="+tok, "-e", "TEROK_SSH_AGENT_PORT="+strconv.Itoa(agentPort),
			"-e", "OTHER_TOKEN="+otherTok, "-e", "SSHC="+sshc, "-e", "REPO="+repo,
			"--", "bash", "-c", script))
		logs := mustOK(t, "logs", r.Sandbox(ctx, "logs", name, "--until-ready", "--timeout", "150"))
		if wait := r.Sandbox(ctx, "wait", name, "--timeout", "60"); wait.Code != 0 {
			t.Fatalf("container exit: %s\nlogs:\n%s\n%s", wait, logs.Stdout, logs.Stderr)
		}
		out := logs.Stdout
		got := sshBetween(out, "== keys", "== end")
		if strings.Join(got, "\n") != strings.Join(projKeys, "\n") {
			t.Fatalf("ssh-add -L in the container:\n%s\nwant:\n%s\nfull output:\n%s\n%s\nagent:\n%s",
				strings.Join(got, "\n"), strings.Join(projKeys, "\n"), out, logs.Stderr, agentLog())
		}
		if got := sshBetween(out, "== other", "== end other"); strings.Join(got, "\n") != strings.Join(otherKeys, "\n") {
			t.Fatalf("other project's bridge lists %q, want %q", got, otherKeys)
		}
		for _, w := range []string{"SSH-42", "CLONED:over ssh", "bridge exit 0", "OTHER-REFUSED"} {
			if !strings.Contains(out, w) {
				t.Fatalf("container output lacks %q:\n%s\n%s\nagent:\n%s", w, out, logs.Stderr, agentLog())
			}
		}
		if strings.Contains(out, "OTHER-LOGGED-IN") {
			t.Fatal("another project's token logged in with proj's key")
		}
		if l := agentLog(); !strings.Contains(l, "project=proj") || !strings.Contains(l, "key=tk-main:proj") || strings.Contains(l, tok[9:]) {
			t.Fatalf("agent log:\n%s", l)
		}
		// The task's timeline (docs/audit.md, The audit command): the
		// signatures with proj's token, by prefix only; the other
		// project's are not this project's.
		au := mustOK(t, "audit", r.Sandbox(ctx, "audit", "task-1", "--project", "proj", "--json"))
		if strings.Contains(au.Stdout, tok) || strings.Contains(au.Stdout, otherTok) {
			t.Fatalf("a token in the audit output:\n%s", au.Stdout)
		}
		signs := 0
		for _, m := range jsonLines(t, au.Stdout) {
			if m["channel"] != "ssh" || m["project"] != "proj" || m["token_prefix"] != audit.TokenPrefix(tok) {
				t.Fatalf("audit record of another channel, project or token: %v", m)
			}
			if m["event"] == "sign" && m["outcome"] == "ok" && strings.HasPrefix(str(m["key_fingerprint"]), "SHA256:") && len(str(m["data_sha256"])) == 64 {
				signs++
			}
		}
		if signs < 2 { // the ssh login and the git clone
			t.Fatalf("%d signatures in the timeline, want at least 2:\n%s", signs, au.Stdout)
		}
	})
}

// With the shield on (no bypass) the container still reaches the agent:
// the shield opens the configured ssh_agent_port on the host-loopback
// gateway. Root and rootless.
func TestSSHAgentThroughShield(t *testing.T) {
	H(t).Each(t, func(t *testing.T, r *testharness.Runner) {
		ctx := e2eCtx(t)
		agentBin, err := H(t).Bin("terok-ssh-agent")
		if err != nil {
			t.Fatal(err)
		}
		shxShieldRunner(t, ctx, r)
		// A profile with only a documentation address: no DNS name to resolve.
		profiles := filepath.Join(r.Dirs.Umbrella, "shield", "profiles")
		if err := r.Mkdir(profiles, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := r.WriteFile(filepath.Join(profiles, "ssh-e2e.txt"), []byte("# ssh e2e\n198.51.100.77\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		agentPort := testkit.FreePort(t)
		if err := r.WriteConfig(fmt.Sprintf("ssh_agent_port = %d\nshield_profiles = [\"ssh-e2e\"]\n", agentPort)); err != nil {
			t.Fatal(err)
		}
		mustOK(t, "ssh init", r.Sandbox(ctx, "ssh", "init", "proj"))
		var rows []struct{ Path string }
		res := mustOK(t, "ssh list", r.Sandbox(ctx, "ssh", "list", "--json"))
		if err := json.Unmarshal([]byte(res.Stdout), &rows); err != nil || len(rows) != 1 {
			t.Fatalf("ssh list: %v\n%s", err, res)
		}
		pub, err := os.ReadFile(rows[0].Path + ".pub")
		if err != nil {
			t.Fatal(err)
		}
		tok := strings.TrimSpace(mustOK(t, "token", r.Sandbox(ctx, "ssh", "token", "create", "proj", "task-1")).Stdout)
		agent := r.Command(ctx, agentBin, "--db-path", filepath.Join(r.Dirs.Credentials, "credentials.db"),
			"--ssh-keys-file", filepath.Join(r.Dirs.Credentials, "ssh-keys.json"), "--port", strconv.Itoa(agentPort))
		agentLog := sshStartLogged(t, agent, "terok-ssh-agent listening")

		name := r.Name("sshshield")
		script := `/opt/terok/terok-ssh-agent bridge --attempts 5 -- sh -c 'echo "== keys"; ssh-add -L; echo "== end"'
echo '>> init complete'`
		mustOK(t, "run", r.Sandbox(ctx, "run", "--name", name, "--image", H(t).Image,
			"-v", agentBin+":/opt/terok/terok-ssh-agent:ro",
			"-e", "TEROK_SSH_AGENT_TOKEN="+tok, "-e", "TEROK_SSH_AGENT_PORT="+strconv.Itoa(agentPort),
			"--", "sh", "-c", script))
		logs := mustOK(t, "logs", r.Sandbox(ctx, "logs", name, "--until-ready", "--timeout", "150"))
		got := sshBetween(logs.Stdout, "== keys", "== end")
		if len(got) != 1 || got[0] != strings.TrimSpace(string(pub)) {
			t.Fatalf("ssh-add -L through the shield: %q\nfull output:\n%s\n%s\nagent:\n%s", got, logs.Stdout, logs.Stderr, agentLog())
		}
	})
}

// sshBetween returns the lines between two marker lines.
func sshBetween(out, start, end string) []string {
	var lines []string
	in := false
	for _, l := range strings.Split(out, "\n") {
		switch {
		case l == start:
			in = true
		case l == end:
			return lines
		case in && strings.TrimSpace(l) != "":
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	return lines
}

// sshStartLogged starts cmd, waits for a stderr line containing ready and
// returns a function giving the output so far. The process is stopped
// when the test ends.
func sshStartLogged(t *testing.T, cmd *exec.Cmd, ready string) func() string {
	t.Helper()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	var mu sync.Mutex
	var all strings.Builder
	isReady := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		seen := false
		for sc.Scan() {
			mu.Lock()
			all.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if !seen && strings.Contains(sc.Text(), ready) {
				seen = true
				close(isReady)
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		<-done
	})
	get := func() string {
		mu.Lock()
		defer mu.Unlock()
		return all.String()
	}
	select {
	case <-isReady:
		return get
	case <-done:
		t.Fatalf("%s exited before %q:\n%s", cmd.Path, ready, get())
	case <-time.After(60 * time.Second):
		t.Fatalf("%s not ready:\n%s", cmd.Path, get())
	}
	return nil
}

// sshStartSSHD runs sshd on 127.0.0.1 with its own config and host key,
// trusting one public key for root, and returns its port.
func sshStartSSHD(t *testing.T, trusted string) int {
	t.Helper()
	port := testkit.FreePort(t)
	sshdAt(t, nil, "127.0.0.1", port, trusted, "e2e host key")
	return port
}

// sshdAt runs sshd on addr:port, under the command prefix (ip netns exec
// NS; nil = none), with its own config and a host key of its own (comment
// names it), trusting one public key for root, until the test ends; it
// returns once sshd listens, with the host key's SHA256 fingerprint.
func sshdAt(t *testing.T, prefix []string, addr string, port int, trusted, comment string) string {
	t.Helper()
	bin := "/usr/sbin/sshd"
	if _, err := os.Stat(bin); err != nil {
		t.Skip("sshd not installed (openssh-server)")
	}
	// OpenSSH's privilege separation directory (the Debian service creates it).
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	hpub, hk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(hk, comment)
	if err != nil {
		t.Fatal(err)
	}
	spub, err := ssh.NewPublicKey(hpub)
	if err != nil {
		t.Fatal(err)
	}
	hostKey, ak, conf := filepath.Join(dir, "host_key"), filepath.Join(dir, "authorized_keys"), filepath.Join(dir, "sshd_config")
	for path, data := range map[string]string{
		hostKey: string(pem.EncodeToMemory(block)),
		ak:      trusted + "\n",
		conf: fmt.Sprintf("Port %d\nListenAddress %s\nHostKey %s\nPidFile none\n"+
			"AuthorizedKeysFile %s\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"+
			"PermitRootLogin prohibit-password\nAllowUsers root\nLogLevel VERBOSE\n", port, addr, hostKey, ak),
	} {
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	argv := append(append([]string(nil), prefix...), bin, "-D", "-e", "-f", conf)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.WaitDelay = 5 * time.Second
	sshStartLogged(t, cmd, "Server listening")
	return ssh.FingerprintSHA256(spub)
}
