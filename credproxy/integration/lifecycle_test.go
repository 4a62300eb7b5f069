package integration

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"terok.dev/sandbox/common/testkit"
)

// keepEnv passes the env's state roots through systemd-socket-activate,
// which starts its command with an empty environment (the proxy would
// otherwise write its default audit file under the real state dir).
func (e *env) keepEnv() []string {
	var a []string
	for _, kv := range e.envVars {
		a = append(a, "-E", kv)
	}
	return a
}

func runProxy(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, string(out)
}

func TestUsageErrors(t *testing.T) {
	base := []string{"--socket-path=/tmp/x.sock", "--db-path=/tmp/x.db", "--routes-file=/tmp/r.json"}
	for _, c := range []struct {
		args []string
		want string
	}{
		{append(base, "--port=0"), "--port must be between 1 and 65535"},
		{append(base, "--port=65536"), "--port must be between 1 and 65535"},
		{append(base, "--port=abc"), "--port must be between 1 and 65535"},
		{append(base, "--ssh-agent-port=70000", "--ssh-keys-file=/k"), "--ssh-agent-port must be between 1 and 65535"},
		{append(base, "--ssh-agent-port=5000"), "--ssh-agent-port and --ssh-keys-file must be provided together"},
		{append(base, "--ssh-keys-file=/k"), "--ssh-agent-port and --ssh-keys-file must be provided together"},
		{base[1:], "--socket-path is required"},
		{append(base, "--bogus"), "flag provided but not defined"},
		{append(base, "extra"), "unexpected argument"},
	} {
		code, out := runProxy(t, c.args...)
		if code != 2 || !strings.Contains(out, c.want) || !strings.Contains(out, "usage:") {
			t.Errorf("%v: exit %d, output %q", c.args, code, out)
		}
	}
	if code, out := runProxy(t, "--version"); code != 0 || !strings.HasPrefix(out, "terok-credential-proxy ") {
		t.Errorf("--version: %d %q", code, out)
	}
}

func TestStartupFailures(t *testing.T) {
	dir := t.TempDir()
	pid := filepath.Join(dir, "run", "p.pid")
	args := func(routes string, extra ...string) []string {
		return append([]string{"--socket-path=" + filepath.Join(dir, "run", "s.sock"), "--db-path=" + filepath.Join(dir, "cred", "c.db"),
			"--routes-file=" + routes, "--pid-file=" + pid}, extra...)
	}
	missing := filepath.Join(dir, "missing.json")
	code, out := runProxy(t, args(missing)...)
	if code != 1 || !strings.Contains(out, missing) {
		t.Errorf("missing routes: %d %q", code, out)
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"claude": {"auth_header": "dynamic"}}`), 0o600)
	code, out = runProxy(t, args(bad)...)
	if code != 1 || !strings.Contains(out, "Route 'claude' missing required 'upstream' field") || !strings.Contains(out, bad) {
		t.Errorf("invalid route: %d %q", code, out)
	}
	if _, err := os.Stat(pid); !os.IsNotExist(err) {
		t.Errorf("PID file left after a failed start: %v", err)
	}
	// A non-socket at the socket path is refused and kept.
	good := filepath.Join(dir, "good.json")
	os.WriteFile(good, []byte("{}\n"), 0o600)
	notSock := filepath.Join(dir, "notsock")
	os.WriteFile(notSock, []byte("data"), 0o600)
	a := args(good)
	a[0] = "--socket-path=" + notSock
	code, out = runProxy(t, a...)
	if code != 1 || !strings.Contains(out, "Refusing to remove non-socket path: "+notSock) {
		t.Errorf("non-socket path: %d %q", code, out)
	}
	// A fresh installation (no database yet) starts and answers 401.
	e := newEnvNoDB(t)
	e.start()
	if code, _, body := e.get("/v1", "Authorization", "Bearer "+tok(1)); code != 401 || body != "Invalid token" {
		t.Errorf("fresh database: %d %q", code, body)
	}
	// A second proxy on the same socket is refused.
	code, out = runProxy(t, "--socket-path="+e.sock, "--db-path="+e.dbPath, "--routes-file="+e.routes)
	if code != 1 || !strings.Contains(out, "Socket path already in use: "+e.sock) {
		t.Errorf("socket in use: %d %q", code, out)
	}
}

// newEnvNoDB is an env whose database file does not exist yet.
func newEnvNoDB(t *testing.T) *env {
	e := newEnv(t, "{}\n")
	e.db.Close()
	for _, s := range []string{"", "-wal", "-shm"} {
		os.Remove(e.dbPath + s)
	}
	return e
}

func TestGracefulSIGTERM(t *testing.T) {
	up := newUpstream(t)
	e := newEnv(t, routesJSON("g", fmt.Sprintf(`{"upstream": %q}`, up.origin())))
	e.cred("default", "g", `{"type":"api_key","key":"`+e.secret("REAL-graceful")+`"}`)
	tk := e.token(tok(1), "default", "g")
	e.start()
	if b, err := os.ReadFile(e.pidFile); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(e.cmd.Process.Pid) {
		t.Fatalf("pid file %q %v", b, err)
	}
	if code, _, _ := e.get("/x", "Authorization", "Bearer "+tk); code != 200 {
		t.Fatal(code)
	}
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	if e.exitErr != nil {
		t.Errorf("exit: %v\n%s", e.exitErr, e.stderr.String())
	}
	for _, p := range []string{e.pidFile, e.sock} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left after shutdown", p)
		}
	}
	if !strings.Contains(e.log(), "SIGTERM received, shutting down") {
		t.Errorf("log:\n%s", e.log())
	}
	e.checkNoSecrets()
	e.cmd = nil
}

// TestSystemdSocketActivation runs the binary under systemd-socket-activate
// with the two sockets of the unit, in the unit's order.
func TestSystemdSocketActivation(t *testing.T) {
	if _, err := exec.LookPath("systemd-socket-activate"); err != nil {
		t.Skip("systemd-socket-activate not installed")
	}
	up := newUpstream(t)
	e := newEnv(t, routesJSON("sa", fmt.Sprintf(`{"upstream": %q}`, up.origin())))
	e.cred("default", "sa", `{"type":"api_key","key":"`+e.secret("REAL-activated")+`"}`)
	tk := e.token(tok(1), "default", "sa")
	e.port = testkit.FreePort(t)
	os.MkdirAll(filepath.Dir(e.sock), 0o700)
	cmd := exec.Command("systemd-socket-activate", append(append([]string{"-l", e.sock, "-l", fmt.Sprintf("127.0.0.1:%d", e.port)},
		e.keepEnv()...), binPath, "--socket-path="+e.sock, "--db-path="+e.dbPath, "--routes-file="+e.routes,
		fmt.Sprintf("--port=%d", e.port), "--log-file="+e.logFile)...)
	e.launch(cmd)
	e.client = &http.Client{Timeout: 30 * time.Second}
	// The sockets listen before the proxy runs: the first request starts it.
	waitDial(t, e.port)
	if code, _, body := e.get("/x", "Authorization", "Bearer "+tk); code != 200 {
		t.Fatalf("TCP via inherited socket: %d %q\n%s", code, body, e.stderr.String())
	}
	out, err := exec.Command("curl", "-sS", "--unix-socket", e.sock, "-H", "Authorization: Bearer "+tk, "http://p/u").CombinedOutput()
	if err != nil || string(out) != `{"ok":true,"n":0}` {
		t.Errorf("Unix via inherited socket: %v %q", err, out)
	}
	log := e.log()
	for _, want := range []string{"Using systemd-inherited Unix socket", "Using systemd-inherited TCP socket"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "Listening on") {
		t.Errorf("proxy opened its own listeners:\n%s", log)
	}
	// Wrong order (TCP first) is refused loudly rather than serving the
	// wrong socket.
	e2 := newEnv(t, "{}")
	p2 := testkit.FreePort(t)
	os.MkdirAll(filepath.Dir(e2.sock), 0o700)
	cmd2 := exec.Command("systemd-socket-activate", append(append([]string{"-l", fmt.Sprintf("127.0.0.1:%d", p2), "-l", e2.sock},
		e2.keepEnv()...), binPath, "--socket-path="+e2.sock, "--db-path="+e2.dbPath, "--routes-file="+e2.routes)...)
	out2, _ := startAndPoke(t, cmd2, p2)
	if !strings.Contains(out2, "descriptor 3 (credential-proxy): a tcp socket, want unix") {
		t.Errorf("wrong socket order: %q", out2)
	}
}

// TestSystemdSocketActivationNamed: a unit with FileDescriptorName= (v8)
// is matched by name and network, whatever the ListenStream= order
// (TCP first here), and the proxy
// reports READY=1 to a Type=notify unit.
func TestSystemdSocketActivationNamed(t *testing.T) {
	if _, err := exec.LookPath("systemd-socket-activate"); err != nil {
		t.Skip("systemd-socket-activate not installed")
	}
	up := newUpstream(t)
	e := newEnv(t, routesJSON("sa", fmt.Sprintf(`{"upstream": %q}`, up.origin())))
	e.cred("default", "sa", `{"type":"api_key","key":"`+e.secret("REAL-named")+`"}`)
	tk := e.token(tok(1), "default", "sa")
	e.port = testkit.FreePort(t)
	os.MkdirAll(filepath.Dir(e.sock), 0o700)
	notify := filepath.Join(filepath.Dir(e.sock), "notify")
	nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	cmd := exec.Command("systemd-socket-activate", append(append([]string{"-l", fmt.Sprintf("127.0.0.1:%d", e.port), "-l", e.sock,
		"--fdname=credential-proxy:credential-proxy", "-E", "NOTIFY_SOCKET=" + notify}, e.keepEnv()...),
		binPath, "--socket-path="+e.sock, "--db-path="+e.dbPath, "--routes-file="+e.routes,
		fmt.Sprintf("--port=%d", e.port), "--log-file="+e.logFile)...)
	e.launch(cmd)
	e.client = &http.Client{Timeout: 30 * time.Second}
	waitDial(t, e.port)
	nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 256)
	n, err := nc.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Fatalf("notification %q %v, want READY=1\n%s", buf[:n], err, e.stderr.String())
	}
	if code, _, body := e.get("/x", "Authorization", "Bearer "+tk); code != 200 {
		t.Fatalf("TCP via named socket: %d %q\n%s", code, body, e.stderr.String())
	}
	out, err := exec.Command("curl", "-sS", "--unix-socket", e.sock, "-H", "Authorization: Bearer "+tk, "http://p/u").CombinedOutput()
	if err != nil || string(out) != `{"ok":true,"n":0}` {
		t.Errorf("Unix via named socket: %v %q", err, out)
	}
}

// startAndPoke starts an activation wrapper, connects once to trigger the
// proxy, and returns its combined output after it exits.
func startAndPoke(t *testing.T, cmd *exec.Cmd, port int) (string, error) {
	t.Helper()
	var buf testkit.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			_, _ = c.Write([]byte("GET /-/health HTTP/1.0\r\n\r\n"))
			_, _ = bufio.NewReader(c).ReadString('\n')
			c.Close()
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case err := <-done:
		return buf.String(), err
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		return buf.String(), fmt.Errorf("did not exit")
	}
}

func waitDial(t *testing.T, port int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("port %d never listened: %v", port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// childPIDs lists the children of pid.
func childPIDs(pid int) []int {
	var out []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, tk := range tasks {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, tk.Name()))
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSSHAgentChild: with --ssh-agent-port/--ssh-keys-file the proxy runs
// the real terok-ssh-agent on that port, restarts it when it dies and
// stops it with SIGTERM when the proxy stops.
func TestSSHAgentChild(t *testing.T) {
	if agentPath == "" {
		t.Skipf("terok-ssh-agent could not be built: %s", agentBuildErr)
	}
	e := newEnv(t, "{}\n")
	keys := filepath.Join(e.dir, "cred", "ssh-keys.json")
	os.WriteFile(keys, []byte("{}\n"), 0o600)
	ports := testkit.FreePorts(t, 2) // the proxy's and the agent's port, distinct
	e.port = ports[0]
	sshPort := ports[1]
	e.start(fmt.Sprintf("--ssh-agent-port=%d", sshPort), "--ssh-keys-file="+keys, "--log-level=bogus")
	proxyPID := e.cmd.Process.Pid
	waitDial(t, sshPort)
	var first int
	waitFor(t, "agent child", func() bool {
		c := childPIDs(proxyPID)
		first = 0
		if len(c) == 1 {
			first = c[0]
		}
		return first != 0
	})
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", first))
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	want := []string{agentPath, "--db-path=" + e.dbPath, "--ssh-keys-file=" + keys, fmt.Sprintf("--port=%d", sshPort), "--bind=127.0.0.1", "--log-level=INFO", "--log-file=" + e.logFile, "--log-format=text",
		// ssh.jsonl beside the proxy's own audit file (docs/credential-proxy.md, Audit records).
		"--audit-file=" + filepath.Join(filepath.Dir(e.auditFile), "ssh.jsonl"),
		// The proxy's own task-ends directory, so both refuse the same ended tasks' tokens
		// (docs/security-model.md, Tokens that die with their task).
		"--task-ends=" + filepath.Join(filepath.Dir(filepath.Dir(e.auditFile)), "task-ends")}
	if strings.Join(args, " ") != strings.Join(want, " ") {
		t.Errorf("child command line:\n got %q\nwant %q", args, want)
	}
	// Killed outright: restarted.
	_ = syscall.Kill(first, syscall.SIGKILL)
	var second int
	waitFor(t, "restarted agent", func() bool {
		c := childPIDs(proxyPID)
		if len(c) == 1 && c[0] != first {
			second = c[0]
			return true
		}
		return false
	})
	waitDial(t, sshPort)
	if !strings.Contains(e.log(), "SSH agent child exited; restarting") {
		t.Errorf("restart not logged:\n%s", e.log())
	}
	// Proxy stopped: the child goes too.
	e.stop()
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", second)); err == nil {
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", second))
		if !strings.Contains(string(stat), ") Z ") {
			t.Errorf("agent child %d still running after the proxy stopped", second)
		}
	}
	if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", sshPort)); err == nil {
		c.Close()
		t.Error("SSH agent port still open after the proxy stopped")
	}
}
