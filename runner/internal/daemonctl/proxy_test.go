package daemonctl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"terok.dev/sandbox/common/testkit"
)

func newProxyManager(t *testing.T) (*ProxyManager, *fakeSystemd) {
	t.Helper()
	fs := &fakeSystemd{active: map[string]bool{}}
	m := &ProxyManager{Manager: testManager(t, fs, Proxy())}
	ports := testkit.FreePorts(t, 2)
	m.Cfg.ProxyPort, m.Cfg.SSHAgentPort = ports[0], ports[1]
	t.Cleanup(func() { m.StopDaemon(); waitGone(t, m) })
	return m, fs
}

func waitGone(t *testing.T, m *ProxyManager) {
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(m.Cfg.ProxySocket()); os.IsNotExist(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("proxy daemon did not go away")
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDaemonLifecycle(t *testing.T) {
	m, _ := newProxyManager(t)
	ctx := context.Background()
	st := m.Status(ctx)
	if st.Mode != ModeNone || st.Running || st.Healthy || st.RoutesConfigured != 0 || len(st.CredentialsStored) != 0 {
		t.Errorf("before start: %+v", st)
	}
	if err := m.EnsureReachable(ctx); err == nil || !strings.HasPrefix(err.Error(), "Credential proxy is not reachable.") ||
		!strings.Contains(err.Error(), "terok-sandbox proxy install") || !strings.Contains(err.Error(), "terok-sandbox proxy start") ||
		!strings.HasSuffix(err.Error(), "Socket: "+m.Cfg.ProxySocket()+"\nDB:     "+m.Cfg.CredentialsDB()) {
		t.Errorf("ensure before start: %v", err)
	}
	if err := m.StartDaemon(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{m.Cfg.RoutesFile(), m.Cfg.SSHKeysJSON()} {
		b, err := os.ReadFile(p)
		fi, _ := os.Stat(p)
		if err != nil || string(b) != "{}\n" || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %q %v", p, b, err)
		}
	}
	if fi, err := os.Stat(filepath.Dir(m.Cfg.ProxyLogFile())); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("log dir: %v", err)
	}
	st = m.Status(ctx)
	if st.Mode != ModeDaemon || !st.Running || !st.Healthy || st.SocketPath != m.Cfg.ProxySocket() || st.DBPath != m.Cfg.CredentialsDB() {
		t.Errorf("after start: %+v", st)
	}
	if err := m.EnsureReachable(ctx); err != nil {
		t.Errorf("ensure with a running daemon (proxy and SSH agent ports): %v", err)
	}
	pid, _ := m.DaemonPID()
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if !strings.Contains(string(cmdline), "--log-level=INFO") || !strings.Contains(string(cmdline), "--pid-file="+m.Cfg.ProxyPIDFile()) {
		t.Errorf("daemon command line %q", cmdline)
	}
	if !m.StopDaemon() {
		t.Error("StopDaemon did not signal")
	}
	waitGone(t, m)
	if st := m.Status(ctx); st.Mode != ModeNone || st.Running {
		t.Errorf("after stop: %+v", st)
	}
	if m.StopDaemon() {
		t.Error("second StopDaemon signalled something")
	}
}

func TestStartFailureReportsStderr(t *testing.T) {
	m, _ := newProxyManager(t)
	os.MkdirAll(m.Cfg.CredentialsDir, 0o700)
	os.WriteFile(m.Cfg.RoutesFile(), []byte(`{"claude": {"auth_header": "dynamic"}}`), 0o600)
	err := m.StartDaemon(context.Background())
	if err == nil || !strings.HasPrefix(err.Error(), "Credential proxy failed to start (exit 1):\n") ||
		!strings.Contains(err.Error(), "Route 'claude' missing required 'upstream' field") {
		t.Errorf("err = %v", err)
	}
	if st := m.Status(context.Background()); st.RoutesConfigured != 1 {
		t.Errorf("routes_configured = %d (top-level keys)", st.RoutesConfigured)
	}
}

func TestStartNotReadyButRunning(t *testing.T) {
	m, _ := newProxyManager(t)
	// A stand-in that runs but never listens.
	sd := t.TempDir()
	script := filepath.Join(sd, "terok-credential-proxy")
	pidFile := filepath.Join(sd, "standin.pid")
	os.WriteFile(script, []byte("#!/bin/sh\necho $$ > "+pidFile+"\nexec sleep 30\n"), 0o755)
	m.FindBinary = func(string) (string, error) { return script, nil }
	start := time.Now()
	err := m.StartDaemon(context.Background())
	want := fmt.Sprintf("Credential proxy process started but did not become ready within 5 s.\nCheck logs or try: curl http://127.0.0.1:%d/-/health", m.Cfg.ProxyPort)
	if err == nil || err.Error() != want {
		t.Errorf("err = %v", err)
	}
	if time.Since(start) < 4*time.Second {
		t.Error("gave up before the 5 s window")
	}
	if pid, err := ReadPID(pidFile); err == nil {
		if p, err := os.FindProcess(pid); err == nil {
			_ = p.Kill()
		}
	}
}

func TestSystemdInstallStatusEnsure(t *testing.T) {
	m, fs := newProxyManager(t)
	ctx := context.Background()
	if err := m.Install(ctx); !errors.Is(err, ErrNoSystemd) || err.Error() != "systemd user services are not available on this host." {
		t.Errorf("install without systemd: %v", err)
	}
	if err := m.Uninstall(ctx); err == nil || err.Error() != "systemd user services are not available. Nothing to uninstall." {
		t.Errorf("uninstall without systemd: %v", err)
	}
	fs.available = true
	if err := m.Install(ctx); err != nil {
		t.Fatal(err)
	}
	dir, _ := UserUnitDir(m.Env)
	sock, _ := os.ReadFile(filepath.Join(dir, m.Daemon.SocketUnit))
	svc, _ := os.ReadFile(filepath.Join(dir, m.Daemon.ServiceUnit))
	if !strings.HasPrefix(string(sock), "# terok-credential-proxy-version: 10\n") ||
		!strings.Contains(string(sock), "ListenStream="+m.Cfg.ProxySocket()+"\nSocketMode=0600\nListenStream=127.0.0.1:"+fmt.Sprint(m.Cfg.ProxyPort)+"\n") {
		t.Errorf("socket unit:\n%s", sock)
	}
	wantExec := fmt.Sprintf("ExecStart=%s --socket-path=%s --db-path=%s --routes-file=%s --port=%d --ssh-agent-port=%d --ssh-keys-file=%s --allow-static-marker=false --audit-file=%s\n",
		testBin(t, ProxyBinary), m.Cfg.ProxySocket(), m.Cfg.CredentialsDB(), m.Cfg.RoutesFile(), m.Cfg.ProxyPort, m.Cfg.SSHAgentPort, m.Cfg.SSHKeysJSON(), m.Cfg.AuditFile("proxy"))
	if !strings.Contains(string(svc), wantExec) {
		t.Errorf("service unit:\n%s\nwant %s", svc, wantExec)
	}
	if m.InstalledVersion() != 10 {
		t.Errorf("installed version %d", m.InstalledVersion())
	}
	// Older stamps (v9: the audit dir had to exist before the first start) are reported.
	sockPath := filepath.Join(dir, m.Daemon.SocketUnit)
	for _, tc := range []struct{ stamp, want string }{
		{"# terok-credential-proxy-version: 9", "Systemd units are outdated (installed v9, expected v10)."},
		{"# terok-credential-proxy-version: x", "Systemd units are outdated (installed unversioned, expected v10)."},
		{"# terok-credential-proxy-version: 11", ""},
	} {
		os.WriteFile(sockPath, []byte(strings.Replace(string(sock), "# terok-credential-proxy-version: 10", tc.stamp, 1)), 0o644)
		if got := m.Status(ctx).Warning; got != tc.want {
			t.Errorf("stamp %q: warning %q, want %q", tc.stamp, got, tc.want)
		}
	}
	os.WriteFile(sockPath, sock, 0o644)
	if w := m.Status(ctx).Warning; w != "" {
		t.Errorf("current units: warning %q", w)
	}
	// Installed: systemd mode; not running while the service is inactive.
	if st := m.Status(ctx); st.Mode != ModeSystemd || st.Running || st.Healthy {
		t.Errorf("installed, inactive: %+v", st)
	}
	// Socket active: ensure starts the service and then waits for both ports.
	// The real binary plays the service here.
	fs.active[m.Daemon.SocketUnit] = true
	fs.active[m.Daemon.ServiceUnit] = true
	if err := m.StartDaemon(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.EnsureReachable(ctx); err != nil {
		t.Errorf("ensure: %v", err)
	}
	if !contains(fs.calls, "start "+m.Daemon.ServiceUnit) {
		t.Errorf("calls %v", fs.calls)
	}
	if st := m.Status(ctx); st.Mode != ModeSystemd || !st.Running || !st.Healthy {
		t.Errorf("installed, active: %+v", st)
	}
	m.StopDaemon()
	waitGone(t, m)
	if err := m.EnsureReachable(ctx); err == nil || err.Error() != fmt.Sprintf("Credential proxy service started but TCP port %d is not reachable. Check: journalctl --user -u terok-credential-proxy", m.Cfg.ProxyPort) {
		t.Errorf("ensure with a dead service: %v", err)
	}
	if err := m.Uninstall(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, m.Daemon.SocketUnit)); !os.IsNotExist(err) {
		t.Error("socket unit left")
	}
}

func TestSSHPortUnreachable(t *testing.T) {
	m, fs := newProxyManager(t)
	fs.active[m.Daemon.SocketUnit] = true
	// Only the proxy port answers: a health endpoint without an SSH agent.
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", m.Cfg.ProxyPort))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 1024)
			_, _ = c.Read(buf)
			_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"))
			c.Close()
		}
	}()
	err = m.EnsureReachable(context.Background())
	if err == nil || err.Error() != fmt.Sprintf("Credential proxy service started but SSH agent port %d is not reachable. Check: journalctl --user -u terok-credential-proxy", m.Cfg.SSHAgentPort) {
		t.Errorf("err = %v", err)
	}
}

// TestRenderedUnitsVerify runs systemd-analyze verify on the rendered units.
func TestRenderedUnitsVerify(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed")
	}
	m, _ := newProxyManager(t)
	units, err := m.RenderUnits(testBin(t, ProxyBinary), m.Cfg.ProxyPort)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var paths []string
	for _, u := range units {
		p := filepath.Join(dir, u.Name)
		os.WriteFile(p, []byte(u.Content), 0o644)
		paths = append(paths, p)
	}
	rt := "/run/user/" + fmt.Sprint(os.Getuid())
	os.MkdirAll(rt, 0o700)
	cmd := exec.Command("systemd-analyze", append([]string{"--user", "verify"}, paths...)...)
	cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+rt)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "terok-credential-proxy") {
			t.Errorf("verify complains: %s", line)
		}
	}
	// Values that could inject directives are refused.
	m.Cfg.CredentialsDir = "/tmp/x\nExecStartPre=/bin/evil"
	if _, err := m.RenderUnits("/bin/true", m.Cfg.ProxyPort); err == nil {
		t.Error("line break rendered into a unit")
	}
}

func TestRoutesCount(t *testing.T) {
	dir := t.TempDir()
	for in, want := range map[string]int{`{}`: 0, `{"a": {}, "b": 1}`: 2, `[1,2]`: 0, `not json`: 0} {
		p := filepath.Join(dir, "r.json")
		os.WriteFile(p, []byte(in), 0o600)
		if got := RoutesCount(p); got != want {
			t.Errorf("RoutesCount(%s) = %d", in, got)
		}
	}
	if RoutesCount(filepath.Join(dir, "missing")) != 0 {
		t.Error("missing file")
	}
}

func contains(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}
