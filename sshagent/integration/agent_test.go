// Package integration starts the real terok-ssh-agent binary (server and
// bridge) against real OpenSSH clients (ssh-add, ssh, git over ssh) and a
// real sshd the test starts on 127.0.0.1 (docs/testing.md, Where tests live).
package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
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

	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/common/sshkeys"
	"terok.dev/sandbox/common/testkit"
	"terok.dev/sandbox/sshagent/internal/testkeys"
)

var agentBin string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		// testkit.Run: every agent this package starts inherits fresh roots,
		// so none writes its default audit file (or anything else) under the
		// real state dirs, and the run fails if one did anyway.
		if d := os.Getenv("TEROK_BIN_DIR"); d != "" {
			if _, err := os.Stat(filepath.Join(d, "terok-ssh-agent")); err == nil {
				agentBin = filepath.Join(d, "terok-ssh-agent")
				return testkit.Run(m)
			}
		}
		dir, err := os.MkdirTemp("", "terok-ssh-agent-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		agentBin = filepath.Join(dir, "terok-ssh-agent")
		out, err := exec.Command("go", "build", "-o", agentBin, "terok.dev/sandbox/sshagent/cmd/terok-ssh-agent").CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build terok-ssh-agent: %v\n%s", err, out)
			return 1
		}
		return testkit.Run(m)
	}())
}

// lineLog collects a process's output and lets a test wait for a line.
type lineLog struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	cond  *sync.Cond
	done  bool
	lines []string
}

func newLineLog() *lineLog {
	l := &lineLog{}
	l.cond = sync.NewCond(&l.mu)
	return l
}

func (l *lineLog) consume(r interface{ Read([]byte) (int, error) }) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l.mu.Lock()
		l.buf.WriteString(sc.Text() + "\n")
		l.lines = append(l.lines, sc.Text())
		l.cond.Broadcast()
		l.mu.Unlock()
	}
	l.mu.Lock()
	l.done = true
	l.cond.Broadcast()
	l.mu.Unlock()
}

// wait blocks until a line contains substr (returns it) or the stream ends.
func (l *lineLog) wait(t testing.TB, substr string) string {
	t.Helper()
	timer := time.AfterFunc(60*time.Second, func() {
		l.mu.Lock()
		l.done = true
		l.cond.Broadcast()
		l.mu.Unlock()
	})
	defer timer.Stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := 0; ; {
		for ; i < len(l.lines); i++ {
			if strings.Contains(l.lines[i], substr) {
				return l.lines[i]
			}
		}
		if l.done {
			t.Fatalf("no line containing %q; output:\n%s", substr, l.buf.String())
		}
		l.cond.Wait()
	}
}

func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

type proc struct {
	cmd    *exec.Cmd
	out    *lineLog      // stdout
	log    *lineLog      // stderr
	exited chan struct{} // closed when the process has exited
	err    error         // its Wait result, valid after exited
}

func startProc(t testing.TB, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), env...)
	so, _ := cmd.StdoutPipe()
	se, _ := cmd.StderrPipe()
	p := &proc{cmd: cmd, out: newLineLog(), log: newLineLog(), exited: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.out.consume(so) }()
	go func() { defer wg.Done(); p.log.consume(se) }()
	go func() { wg.Wait(); p.err = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

type fixture struct {
	dir, dbPath, keysFile string
	db                    *creddb.DB
	mainA, sideA, mainB   testkeys.Pair
	rsaR                  testkeys.Pair
	tokA, tokB, tokR      string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir()}
	f.dbPath = filepath.Join(f.dir, "creds", "credentials.db")
	f.keysFile = filepath.Join(f.dir, "creds", "ssh-keys.json")
	var err error
	if f.db, err = creddb.Open(f.dbPath); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.db.Close() })
	f.sideA = testkeys.New(t, f.dir, "id_ed25519_key-1", "ed25519", "tk-side:a:key-1", testkeys.OpenSSH)
	f.mainA = testkeys.New(t, f.dir, "id_ed25519_a", "ed25519", "tk-main:a", testkeys.OpenSSH)
	f.mainB = testkeys.New(t, f.dir, "id_ed25519_b", "ed25519", "tk-main:b", testkeys.OpenSSH)
	f.rsaR = testkeys.New(t, f.dir, "id_rsa_r", "rsa", "tk-main:r", testkeys.PKCS1)
	for _, r := range []struct {
		p string
		k testkeys.Pair
	}{{"a", f.sideA}, {"a", f.mainA}, {"b", f.mainB}, {"r", f.rsaR}} {
		if err := sshkeys.Update(f.keysFile, sshkeys.Pair{Project: r.p, PrivateKey: r.k.Private, PublicKey: r.k.Public}); err != nil {
			t.Fatal(err)
		}
	}
	mk := func(p string) string {
		tok, err := f.db.CreateToken(context.Background(), creddb.TokenSpec{Project: p, Task: "t1", Set: creddb.DefaultSet, Provider: creddb.SSHProvider})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	f.tokA, f.tokB, f.tokR = mk("a"), mk("b"), mk("r")
	return f
}

// startAgent runs the server binary on a free port and waits until it listens.
func (f *fixture) startAgent(t *testing.T, extra ...string) (*proc, int) {
	t.Helper()
	for attempt := 0; ; attempt++ {
		port := testkit.FreePort(t)
		args := append([]string{agentBin, "--db-path", f.dbPath, "--ssh-keys-file", f.keysFile,
			"--port", strconv.Itoa(port), "--log-level", "DEBUG"}, extra...)
		p := startProc(t, nil, args...)
		p.log.wait(t, "msg=") // first line: listening or a failure
		if strings.Contains(p.log.String(), "listening") {
			return p, port
		}
		if attempt == 3 || !strings.Contains(p.log.String(), "address already in use") {
			t.Fatalf("agent did not start:\n%s", p.log.String())
		}
	}
}

// startBridge runs the bridge binary towards port and returns its socket.
func (f *fixture) startBridge(t *testing.T, tok string, port int, extra ...string) (*proc, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent", "agent.sock")
	args := append([]string{agentBin, "bridge", "--listen", sock, "--agent-host", "127.0.0.1",
		"--agent-port", strconv.Itoa(port), "--log-level", "DEBUG"}, extra...)
	p := startProc(t, []string{"TEROK_SSH_AGENT_TOKEN=" + tok}, args...)
	if got := p.out.wait(t, "SSH_AUTH_SOCK="); got != "SSH_AUTH_SOCK="+sock {
		t.Fatalf("bridge printed %q", got)
	}
	return p, sock
}

func run(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func authorizedLine(p testkeys.Pair) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(p.Signer.PublicKey())))
}

func TestSSHAddListsExactlyTheProjectsKeys(t *testing.T) {
	f := newFixture(t)
	agent, port := f.startAgent(t)
	_, sockA := f.startBridge(t, f.tokA, port)
	out, err := run(t, []string{"SSH_AUTH_SOCK=" + sockA}, "ssh-add", "-L")
	if err != nil {
		t.Fatalf("ssh-add -L: %v\n%s\n%s", err, out, agent.log)
	}
	want := authorizedLine(f.mainA) + " tk-main:a\n" + authorizedLine(f.sideA) + " tk-side:a:key-1\n"
	if out != want {
		t.Fatalf("ssh-add -L =\n%s\nwant\n%s", out, want)
	}
	// Adding, deleting and locking are refused.
	if out, err := run(t, []string{"SSH_AUTH_SOCK=" + sockA}, "ssh-add", f.mainB.Private); err == nil {
		t.Fatalf("ssh-add of a key succeeded: %s", out)
	}
	if out, err := run(t, []string{"SSH_AUTH_SOCK=" + sockA}, "ssh-add", "-D"); err == nil {
		t.Fatalf("ssh-add -D succeeded: %s", out)
	}
	_, sockB := f.startBridge(t, f.tokB, port)
	out, err = run(t, []string{"SSH_AUTH_SOCK=" + sockB}, "ssh-add", "-L")
	if err != nil || out != authorizedLine(f.mainB)+" tk-main:b\n" {
		t.Fatalf("B: %v %q", err, out)
	}
	// Bridge command mode: runs the client with SSH_AUTH_SOCK set, passes its status.
	cmd := exec.Command(agentBin, "bridge", "--agent-host", "127.0.0.1", "--agent-port", strconv.Itoa(port),
		"--listen", filepath.Join(t.TempDir(), "s", "agent.sock"), "--", "ssh-add", "-l")
	cmd.Env = append(os.Environ(), "TEROK_SSH_AGENT_TOKEN="+f.tokB)
	b, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(b), "tk-main:b (ED25519)") {
		t.Fatalf("bridge -- ssh-add -l: %v\n%s", err, b)
	}
	// An unknown token: the client sees no agent session at all.
	_, sockX := f.startBridge(t, "terok-p-ffffffffffffffffffffffffffffffff", port)
	if out, err := run(t, []string{"SSH_AUTH_SOCK=" + sockX}, "ssh-add", "-L"); err == nil {
		t.Fatalf("unknown token listed keys: %s", out)
	}
}

// sshd is a real OpenSSH server on 127.0.0.1 that trusts exactly the given keys.
type sshd struct {
	port    int
	dir     string
	hostKey string
}

func startSSHD(t *testing.T, trusted ...testkeys.Pair) *sshd {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("starting sshd needs root")
	}
	bin, err := exec.LookPath("sshd")
	if err != nil {
		bin = "/usr/sbin/sshd"
		if _, err := os.Stat(bin); err != nil {
			t.Skip("sshd not installed")
		}
	}
	// OpenSSH's privilege separation directory (what the Debian service creates).
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	s := &sshd{dir: t.TempDir()}
	_, hk, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(hk, "test host key")
	if err != nil {
		t.Fatal(err)
	}
	s.hostKey = filepath.Join(s.dir, "host_ed25519")
	if err := os.WriteFile(s.hostKey, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	var auth strings.Builder
	for _, k := range trusted {
		auth.WriteString(authorizedLine(k) + "\n")
	}
	ak := filepath.Join(s.dir, "authorized_keys")
	if err := os.WriteFile(ak, []byte(auth.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	for attempt := 0; ; attempt++ {
		s.port = testkit.FreePort(t)
		conf := filepath.Join(s.dir, "sshd_config")
		cfg := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s
PidFile none
AuthorizedKeysFile %s
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
AllowUsers root
LogLevel VERBOSE
`, s.port, s.hostKey, ak)
		if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		p := startProc(t, nil, bin, "-D", "-e", "-f", conf)
		p.log.wait(t, "")
		if strings.Contains(p.log.String(), "Server listening") {
			return s
		}
		if attempt == 3 || !strings.Contains(p.log.String(), "Address already in use") {
			t.Fatalf("sshd did not start:\n%s", p.log.String())
		}
	}
}

func (s *sshd) sshCommand(extra ...string) string {
	parts := append([]string{"ssh", "-F", "/dev/null", "-p", strconv.Itoa(s.port),
		"-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile=" + filepath.Join(s.dir, "known_hosts"),
		"-o", "IdentitiesOnly=no", "-o", "IdentityFile=none", "-o", "PasswordAuthentication=no"}, extra...)
	return strings.Join(parts, " ")
}

func (s *sshd) trustHostKey(t *testing.T) {
	t.Helper()
	data, err := os.ReadFile(s.hostKey)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(data)
	if err != nil {
		t.Fatal(err)
	}
	line := fmt.Sprintf("[127.0.0.1]:%d %s", s.port, ssh.MarshalAuthorizedKey(signer.PublicKey()))
	if err := os.WriteFile(filepath.Join(s.dir, "known_hosts"), []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestSSHAndGitThroughTheBridge(t *testing.T) {
	f := newFixture(t)
	srv := startSSHD(t, f.mainA, f.rsaR)
	srv.trustHostKey(t)
	agent, port := f.startAgent(t)
	_, sockA := f.startBridge(t, f.tokA, port)
	envA := []string{"SSH_AUTH_SOCK=" + sockA}

	out, err := run(t, envA, "sh", "-c", srv.sshCommand()+" root@127.0.0.1 echo hello-from-sshd")
	if err != nil || !strings.Contains(out, "hello-from-sshd") {
		t.Fatalf("ssh through the agent: %v\n%s\nagent log:\n%s", err, out, agent.log)
	}
	agent.log.wait(t, "key=tk-main:a")

	// git clone over ssh from that sshd.
	repo := filepath.Join(srv.dir, "repo.git")
	work := filepath.Join(srv.dir, "work")
	for _, c := range [][]string{
		{"git", "init", "-q", "--bare", repo},
		{"git", "init", "-q", work},
		{"git", "-C", work, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "--allow-empty", "-m", "first"},
		{"git", "-C", work, "push", "-q", repo, "HEAD:refs/heads/main"},
		{"git", "-C", repo, "symbolic-ref", "HEAD", "refs/heads/main"},
	} {
		if out, err := run(t, nil, c...); err != nil {
			t.Fatalf("%v: %v\n%s", c, err, out)
		}
	}
	clone := filepath.Join(t.TempDir(), "clone")
	out, err = run(t, append(envA, "GIT_SSH_COMMAND="+srv.sshCommand()),
		"git", "clone", "-q", "root@127.0.0.1:"+repo, clone)
	if err != nil {
		t.Fatalf("git clone over ssh: %v\n%s", err, out)
	}
	if out, err := run(t, nil, "git", "-C", clone, "log", "--format=%s"); err != nil || strings.TrimSpace(out) != "first" {
		t.Fatalf("cloned log %q %v", out, err)
	}

	// Project B's token cannot log in: sshd trusts only A's and R's keys.
	_, sockB := f.startBridge(t, f.tokB, port)
	out, err = run(t, []string{"SSH_AUTH_SOCK=" + sockB}, "sh", "-c", srv.sshCommand()+" root@127.0.0.1 true")
	if err == nil || !strings.Contains(out, "Permission denied") {
		t.Fatalf("B logged in with A's key: %v\n%s", err, out)
	}

	// RSA with each SHA-2 algorithm the client may ask for.
	_, sockR := f.startBridge(t, f.tokR, port)
	for _, algo := range []string{"rsa-sha2-256", "rsa-sha2-512"} {
		cmd := srv.sshCommand("-o", "PubkeyAcceptedAlgorithms="+algo) + " root@127.0.0.1 echo ok-" + algo
		out, err := run(t, []string{"SSH_AUTH_SOCK=" + sockR}, "sh", "-c", cmd)
		if err != nil || !strings.Contains(out, "ok-"+algo) {
			t.Fatalf("%s: %v\n%s\nagent log:\n%s", algo, err, out, agent.log)
		}
		agent.log.wait(t, "algorithm="+algo)
	}
	if strings.Contains(agent.log.String(), f.tokA[10:]) {
		t.Fatal("the agent logged a token")
	}
}

func TestBridgeRetriesWhileAgentStarts(t *testing.T) {
	f := newFixture(t)
	port := testkit.FreePort(t)
	sock := filepath.Join(t.TempDir(), "b", "agent.sock")
	b := startProc(t, []string{"TEROK_SSH_AGENT_TOKEN=" + f.tokA}, agentBin, "bridge", "--listen", sock,
		"--agent-host", "127.0.0.1", "--agent-port", strconv.Itoa(port), "--interval", "100ms", "--attempts", "600", "--log-level", "INFO")
	b.out.wait(t, "SSH_AUTH_SOCK=")
	type result struct {
		out string
		err error
	}
	res := make(chan result, 1)
	go func() {
		cmd := exec.Command("ssh-add", "-L")
		cmd.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
		out, err := cmd.CombinedOutput()
		res <- result{string(out), err}
	}()
	b.log.wait(t, "agent not reachable yet") // the client is waiting on a retrying bridge
	startProc(t, nil, agentBin, "--db-path", f.dbPath, "--ssh-keys-file", f.keysFile, "--port", strconv.Itoa(port))
	r := <-res
	if r.err != nil || !strings.Contains(r.out, "tk-main:a") {
		t.Fatalf("ssh-add after agent start: %v\n%s\nbridge:\n%s", r.err, r.out, b.log)
	}
}

func TestBridgeFlagErrors(t *testing.T) {
	cases := []struct {
		env  []string
		args []string
		want string
	}{
		{[]string{"TEROK_SSH_AGENT_TOKEN="}, nil, "TEROK_SSH_AGENT_TOKEN"},
		{[]string{"TEROK_SSH_AGENT_TOKEN=terok-p-x", "TEROK_SSH_AGENT_PORT=22x"}, nil, "not a number"},
		{[]string{"TEROK_SSH_AGENT_TOKEN=terok-p-x"}, []string{"--agent-port", "70000"}, "not a number"},
		{[]string{"TEROK_SSH_AGENT_TOKEN=terok-p-x"}, []string{"--listen", "relative.sock"}, "absolute"},
		{[]string{"TEROK_SSH_AGENT_TOKEN=terok-p-x"}, []string{"--bogus"}, "flag provided but not defined"},
	}
	for _, c := range cases {
		cmd := exec.Command(agentBin, append([]string{"bridge"}, c.args...)...)
		cmd.Env = append(os.Environ(), c.env...)
		out, err := cmd.CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() == 0 || !strings.Contains(string(out), c.want) {
			t.Fatalf("%v %v: %v\n%s", c.env, c.args, err, out)
		}
	}
}

func TestServerFlagErrors(t *testing.T) {
	cases := []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "--db-path is required"},
		{[]string{"--db-path", "x"}, 2, "--ssh-keys-file is required"},
		{[]string{"--db-path", "x", "--ssh-keys-file", "y", "--port", "0"}, 2, "--port"},
		{[]string{"--db-path", "x", "--ssh-keys-file", "y", "--log-level", "LOUD"}, 2, "log level"},
		{[]string{"--nope"}, 2, "flag provided but not defined"},
		{[]string{"--db-path", "x", "--ssh-keys-file", "y", "--metrics-listen", "0.0.0.0:9464"}, 2, "only a loopback address"},
		{[]string{"--db-path", "x", "--ssh-keys-file", "y", "--metrics-listen", "localhost:9464"}, 2, "--metrics-listen"},
	}
	for _, c := range cases {
		out, err := exec.Command(agentBin, c.args...).CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != c.code || !strings.Contains(string(out), c.want) {
			t.Fatalf("%v: %v\n%s", c.args, err, out)
		}
	}
	out, err := exec.Command(agentBin, "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "terok-ssh-agent ") {
		t.Fatalf("--version: %v %s", err, out)
	}
}

func TestSIGTERMAndPIDFile(t *testing.T) {
	f := newFixture(t)
	pidFile := filepath.Join(f.dir, "run", "agent.pid")
	sock := filepath.Join(f.dir, "run", "agent.sock")
	if err := os.MkdirAll(filepath.Dir(pidFile), 0o700); err != nil {
		t.Fatal(err)
	}
	p, _ := f.startAgent(t, "--pid-file", pidFile, "--socket-path", sock)
	data, err := os.ReadFile(pidFile)
	if err != nil || strings.TrimSpace(string(data)) != strconv.Itoa(p.cmd.Process.Pid) {
		t.Fatalf("pid file %q %v", data, err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("unix socket: %v %v", fi, err)
	}
	// The bridge can use the mounted unix socket instead of TCP.
	b := startProc(t, []string{"TEROK_SSH_AGENT_TOKEN=" + f.tokA, "TEROK_SSH_AGENT_SOCKET=" + sock},
		agentBin, "bridge", "--listen", filepath.Join(t.TempDir(), "u", "agent.sock"))
	line := b.out.wait(t, "SSH_AUTH_SOCK=")
	out, err := run(t, []string{line}, "ssh-add", "-L")
	if err != nil || !strings.Contains(out, "tk-main:a") {
		t.Fatalf("via unix socket: %v %s", err, out)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		if p.err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", p.err, p.log)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("agent did not stop on SIGTERM")
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Fatalf("pid file left behind: %v", err)
	}
}

// A v4 unit names its descriptor (FileDescriptorName=ssh-agent) and is
// Type=notify: the agent serves the named socket, reports READY=1 and,
// on SIGTERM, STOPPING=1 (docs/install.md, Socket activation and readiness).
func TestSocketActivationNamedNotify(t *testing.T) {
	if _, err := exec.LookPath("systemd-socket-activate"); err != nil {
		t.Skip("systemd-socket-activate not installed")
	}
	f := newFixture(t)
	notify := filepath.Join(t.TempDir(), "notify")
	nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for attempt := 0; ; attempt++ {
		port := testkit.FreePort(t)
		addr := "127.0.0.1:" + strconv.Itoa(port)
		// systemd-socket-activate clears the environment: the roots go
		// through -E, or the agent writes its default audit file under
		// /var/lib/terok.
		args := append([]string{"systemd-socket-activate", "-l", addr, "--fdname=ssh-agent", "-E", "NOTIFY_SOCKET=" + notify}, testkit.ActivateEnv()...)
		p := startProc(t, nil, append(args,
			agentBin, "--db-path", f.dbPath, "--ssh-keys-file", f.keysFile, "--port", "1", "--log-level", "DEBUG")...)
		p.log.wait(t, "Listening on")
		if !strings.Contains(p.log.String(), addr) {
			if attempt < 3 {
				continue
			}
			t.Fatalf("systemd-socket-activate: %s", p.log)
		}
		_, sock := f.startBridge(t, f.tokA, port)
		out, err := run(t, []string{"SSH_AUTH_SOCK=" + sock}, "ssh-add", "-L")
		if err != nil || !strings.Contains(out, "tk-main:a") {
			t.Fatalf("activated agent: %v %s\n%s", err, out, p.log)
		}
		buf := make([]byte, 256)
		nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := nc.Read(buf); err != nil || string(buf[:n]) != "READY=1" {
			t.Fatalf("first notification %q %v, want READY=1", buf[:n], err)
		}
		p.cmd.Process.Signal(syscall.SIGTERM) // systemd-socket-activate exec'd the agent
		if n, err := nc.Read(buf); err != nil || string(buf[:n]) != "STOPPING=1" {
			t.Fatalf("notification on SIGTERM %q %v, want STOPPING=1", buf[:n], err)
		}
		return
	}
}

// With systemd socket activation the agent serves the passed descriptor.
func TestSocketActivation(t *testing.T) {
	if _, err := exec.LookPath("systemd-socket-activate"); err != nil {
		t.Skip("systemd-socket-activate not installed")
	}
	f := newFixture(t)
	for attempt := 0; ; attempt++ {
		port := testkit.FreePort(t)
		addr := "127.0.0.1:" + strconv.Itoa(port)
		args := append([]string{"systemd-socket-activate", "-l", addr}, testkit.ActivateEnv()...)
		p := startProc(t, nil, append(args, agentBin,
			"--db-path", f.dbPath, "--ssh-keys-file", f.keysFile, "--port", "1", "--log-level", "DEBUG")...)
		p.log.wait(t, "Listening on")
		if !strings.Contains(p.log.String(), addr) {
			if attempt < 3 {
				continue
			}
			t.Fatalf("systemd-socket-activate: %s", p.log)
		}
		_, sock := f.startBridge(t, f.tokA, port)
		out, err := run(t, []string{"SSH_AUTH_SOCK=" + sock}, "ssh-add", "-L")
		if err != nil || !strings.Contains(out, "tk-main:a") {
			t.Fatalf("activated agent: %v %s\n%s", err, out, p.log)
		}
		p.log.wait(t, "[127.0.0.1:"+strconv.Itoa(port)+"]") // the listening line names the passed socket
		return
	}
}
