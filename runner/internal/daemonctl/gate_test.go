package daemonctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"terok.dev/sandbox/common/testkit"
	"terok.dev/sandbox/systemd"
)

// testGateManager is a non-root user's gate manager with its own home and
// state.
func testGateManager(t *testing.T, fs *fakeSystemd) *GateManager {
	t.Helper()
	return &GateManager{testManager(t, fs, Gate())}
}

func TestRenderUnitsAndSystemdVerify(t *testing.T) {
	m := testGateManager(t, &fakeSystemd{})
	bin := testBin(t, GateBinary)
	units, err := m.RenderUnits(bin, 12345)
	if err != nil {
		t.Fatal(err)
	}
	sock, svc := units[0].Content, units[1].Content
	if !strings.HasPrefix(sock, "# terok-gate-version: 11\n") || !strings.Contains(sock, "ListenStream=127.0.0.1:12345\n") || strings.Contains(sock, "Accept=") {
		t.Fatalf("socket unit:\n%s", sock)
	}
	wantExec := fmt.Sprintf("ExecStart=%s --base-path=%s --token-file=%s --audit-file=%s\n", bin, m.Cfg.GateBasePath(), m.Cfg.GateTokenFile(), m.Cfg.AuditFile("gate"))
	if !strings.Contains(svc, wantExec) || strings.Contains(svc+sock, "{{") {
		t.Fatalf("service unit:\n%s", svc)
	}
	if !strings.Contains(svc, "ReadWritePaths="+m.Cfg.GateBasePath()+" -"+m.Cfg.AuditDir()+"\n") ||
		!strings.Contains(svc, "ExecStartPre=+/usr/bin/mkdir -p -m 0700 "+m.Cfg.AuditDir()+"\n") {
		t.Fatalf("the service cannot write its audit directory:\n%s", svc)
	}
	m.Cfg.Audit = false
	if a := m.DaemonArgs(1); !slices.Contains(a, "--audit-file=off") {
		t.Errorf("audit = false: daemon args %q", a)
	}
	m.Cfg.Audit = true
	if ParseBasePath(svc) != m.Cfg.GateBasePath() {
		t.Fatalf("ParseBasePath = %q", ParseBasePath(svc))
	}
	// Values that could inject directives are refused.
	if _, err := m.RenderUnits("/bin/x\nExecStartPre=/bin/evil", 1); err == nil {
		t.Fatal("newline in the binary path accepted")
	}
	if _, err := m.RenderUnits(bin, 0); err == nil {
		t.Fatal("port 0 accepted")
	}

	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	dir := t.TempDir()
	for _, u := range units {
		if err := os.WriteFile(filepath.Join(dir, u.Name), []byte(u.Content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rt := filepath.Join(dir, "xdg-runtime")
	os.MkdirAll(rt, 0o700)
	verify := func(names ...string) (string, error) {
		args := []string{"--user", "verify"}
		for _, n := range names {
			args = append(args, filepath.Join(dir, n))
		}
		cmd := exec.Command(sa, args...)
		cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+rt)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := verify(systemd.GateSocketName, systemd.GateServiceName); err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	// Control: a broken socket is reported, so the check above means something.
	bad := strings.Replace(sock, "ListenStream=", "ListenStreamX=", 1)
	os.WriteFile(filepath.Join(dir, systemd.GateSocketName), []byte(bad), 0o644)
	if _, err := verify(systemd.GateSocketName); err == nil {
		t.Fatal("systemd-analyze accepted a socket without Listen setting")
	}
}

func TestStartSystemdHonoursPortAndStatus(t *testing.T) {
	fs := &fakeSystemd{available: true}
	m := testGateManager(t, fs)
	ctx := context.Background()
	if st := m.Status(ctx); st.Mode != ModeNone || st.Running {
		t.Fatalf("initial status %+v", st)
	}
	mode, err := m.Start(ctx, 23456, false)
	if err != nil || mode != ModeSystemd {
		t.Fatalf("start: %s %v", mode, err)
	}
	if !strings.Contains(fs.installed[0].Content, "ListenStream=127.0.0.1:23456") {
		t.Fatalf("--port not honoured in the socket unit:\n%s", fs.installed[0].Content)
	}
	if st := m.Status(ctx); st.Mode != ModeSystemd || st.Running {
		t.Fatalf("installed, inactive: %+v", st)
	}
	fs.allActive = true
	if st := m.Status(ctx); st.Mode != ModeSystemd || !st.Running || st.Port != m.Cfg.GatePort {
		t.Fatalf("installed, active: %+v", st)
	}
	if msg := m.CheckUnitsOutdated(); msg != "" {
		t.Fatalf("fresh units reported: %q", msg)
	}
	if err := m.EnsureReachable(ctx); err != nil {
		t.Fatalf("ensure: %v", err)
	}
	unitDir := filepath.Join(m.Env.Home, ".config", "systemd", "user")
	sockPath := filepath.Join(unitDir, systemd.GateSocketName)
	orig, _ := os.ReadFile(sockPath)
	for _, tc := range []struct{ stamp, want string }{
		{"# terok-gate-version: 6", "Systemd units are outdated (installed v6, expected v11)."},
		{"# terok-gate-version: 10", "Systemd units are outdated (installed v10, expected v11)."}, // the audit dir had to exist before the first start
		{"# terok-gate-version: x", "Systemd units are outdated (installed unversioned, expected v11)."},
		{"# something else", "Systemd units are outdated (installed unversioned, expected v11)."},
		{"# terok-gate-version: 11", ""},
	} {
		content := strings.Replace(string(orig), "# terok-gate-version: 11", tc.stamp, 1)
		os.WriteFile(sockPath, []byte(content), 0o644)
		if got := m.CheckUnitsOutdated(); got != tc.want {
			t.Errorf("stamp %q: %q, want %q", tc.stamp, got, tc.want)
		}
		err := m.EnsureReachable(ctx)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), "Gate server systemd units are outdated")) {
			t.Errorf("stamp %q: ensure %v", tc.stamp, err)
		}
	}
	os.WriteFile(sockPath, orig, 0o644)
	// Base path divergence: the same configuration object with another state dir.
	other := *m
	other.Cfg.StateDir = filepath.Join(t.TempDir(), "elsewhere")
	want := fmt.Sprintf("Installed gate base path diverges from current config.\n  Installed: %s\n  Expected:  %s", m.Cfg.GateBasePath(), other.Cfg.GateBasePath())
	if got := other.CheckUnitsOutdated(); got != want {
		t.Fatalf("divergence: %q", got)
	}
	if err := other.EnsureReachable(ctx); err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("ensure with divergence: %v", err)
	}
	// A symlink to the same base path is not a divergence.
	link := filepath.Join(t.TempDir(), "link")
	os.Symlink(m.Cfg.StateDir, link)
	same := *m
	same.Cfg.StateDir = link
	if got := same.CheckUnitsOutdated(); got != "" {
		t.Fatalf("symlinked base path reported: %q", got)
	}
	if err := m.Uninstall(ctx); err != nil || !fs.uninstalled {
		t.Fatalf("uninstall: %v", err)
	}
	if _, err := os.Stat(sockPath); !os.IsNotExist(err) {
		t.Fatal("socket unit left behind")
	}
}

func TestEnsureNotRunningMessages(t *testing.T) {
	ctx := context.Background()
	m := testGateManager(t, &fakeSystemd{available: true})
	err := m.EnsureReachable(ctx)
	if err == nil || !strings.HasPrefix(err.Error(), "Gate server is not running.") ||
		!strings.HasSuffix(err.Error(), "Recommended: install and start the systemd socket.\n  terok-sandbox gate start") {
		t.Fatalf("systemd available: %v", err)
	}
	m = testGateManager(t, &fakeSystemd{})
	err = m.EnsureReachable(ctx)
	if err == nil || !strings.HasSuffix(err.Error(), "Start the gate daemon.\n  terok-sandbox gate start --daemon") {
		t.Fatalf("no systemd: %v", err)
	}
	// Root never installs user units: the daemon is the way.
	m.Env.EUID = 0
	if m.SystemdUsable(ctx) {
		t.Fatal("systemd usable for root")
	}
}

// Without systemd user services the gate's install and uninstall return
// the proxy's typed errors (one message for both daemons) and touch no
// unit file.
func TestGateInstallWithoutSystemd(t *testing.T) {
	fs := &fakeSystemd{}
	m := testGateManager(t, fs)
	ctx := context.Background()
	if err := m.Install(ctx, 23456); !errors.Is(err, ErrNoSystemd) {
		t.Errorf("install without systemd: %v", err)
	}
	if err := m.Uninstall(ctx); !errors.Is(err, ErrNoSystemdUninstall) {
		t.Errorf("uninstall without systemd: %v", err)
	}
	if len(fs.calls) != 0 || fs.uninstalled || m.SocketInstalled() {
		t.Errorf("systemd touched: calls %v, uninstalled %v, socket installed %v", fs.calls, fs.uninstalled, m.SocketInstalled())
	}
}

func TestDaemonLifecycleRealBinary(t *testing.T) {
	m := testGateManager(t, &fakeSystemd{})
	ctx := context.Background()
	ln := testkit.FreePort(t)
	adminTok := "terok-g-abababababababababababababababab"
	getenv := m.Env.Getenv
	m.Env.Getenv = func(k string) string {
		if k == EnvGateAdminToken {
			return adminTok
		}
		return getenv(k)
	}
	args := strings.Join(m.DaemonArgs(ln), " ")
	if strings.Contains(args, adminTok) {
		t.Fatal("admin token in the daemon arguments")
	}
	mode, err := m.Start(ctx, ln, false)
	if err != nil || mode != ModeDaemon {
		t.Fatalf("start: %s %v", mode, err)
	}
	pid, ok := m.DaemonPID()
	if !ok {
		t.Fatal("daemon not found after start")
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if bytes.Contains(cmdline, []byte(adminTok)) {
		t.Fatal("admin token on the daemon's command line")
	}
	if !bytes.Contains(cmdline, []byte("--port="+strconv.Itoa(ln))) {
		t.Fatalf("--port not honoured in daemon mode: %q", cmdline)
	}
	// The real gate runs with its audit file (docs/audit.md, Files, rotation, modes).
	if !bytes.Contains(cmdline, []byte("--audit-file="+m.Cfg.AuditFile("gate")+"\x00")) {
		t.Fatalf("--audit-file not passed: %q", cmdline)
	}
	if st := m.Status(ctx); st.Mode != ModeDaemon || !st.Running {
		t.Fatalf("status %+v", st)
	}
	if err := m.EnsureReachable(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Start(ctx, ln, true); err == nil {
		t.Fatal("second start succeeded")
	}
	if !m.StopDaemon() {
		t.Fatal("stop reported nothing stopped")
	}
	if Alive(pid) {
		t.Fatal("daemon still alive after stop")
	}
	if _, err := os.Stat(m.Cfg.GatePIDFile()); !os.IsNotExist(err) {
		t.Fatal("PID file left behind")
	}
	if st := m.Status(ctx); st.Mode != ModeNone {
		t.Fatalf("status after stop %+v", st)
	}
}

func TestForeignPIDNeverSignalled(t *testing.T) {
	m := testGateManager(t, &fakeSystemd{})
	sleeper := exec.Command("sleep", "300")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	os.MkdirAll(filepath.Dir(m.Cfg.GatePIDFile()), 0o700)
	if err := os.WriteFile(m.Cfg.GatePIDFile(), []byte(strconv.Itoa(sleeper.Process.Pid)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if st := m.Status(context.Background()); st.Running {
		t.Fatalf("foreign process counted as the gate: %+v", st)
	}
	if m.StopDaemon() {
		t.Fatal("stop claims to have signalled a foreign process")
	}
	time.Sleep(50 * time.Millisecond) // a wrongly sent SIGTERM would have landed by now
	if !Alive(sleeper.Process.Pid) {
		t.Fatal("foreign process was signalled")
	}
	if _, err := os.Stat(m.Cfg.GatePIDFile()); !os.IsNotExist(err) {
		t.Fatal("stale PID file kept")
	}
}

// The rendered v7 service, run the way systemd runs it (the socket's
// listener passed by LISTEN_FDS, through systemd-socket-activate without
// --accept): one long-lived gate answers connection after connection.
func TestRenderedUnitsServeLongLived(t *testing.T) {
	sa, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("systemd-socket-activate not installed (Debian package systemd)")
	}
	m := testGateManager(t, &fakeSystemd{})
	bin := testBin(t, GateBinary)
	port := testkit.FreePort(t)
	units, err := m.RenderUnits(bin, port)
	if err != nil {
		t.Fatal(err)
	}
	var argv []string
	for _, line := range strings.Split(units[1].Content, "\n") {
		if rest, ok := strings.CutPrefix(line, "ExecStart="); ok {
			argv = strings.Fields(rest)
		}
	}
	if len(argv) == 0 {
		t.Fatalf("no ExecStart in\n%s", units[1].Content)
	}
	if err := os.MkdirAll(m.Cfg.GateBasePath(), 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sa, append([]string{"-l", "127.0.0.1:" + strconv.Itoa(port)}, argv...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + m.Env.Home}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("stderr:\n%s", stderr.String())
		}
	})
	ask := func() string {
		t.Helper()
		var c net.Conn
		for i := 0; i < 100; i++ {
			if c, err = net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte("GET /demo.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		_, _ = buf.ReadFrom(c)
		return buf.String()
	}
	for i := 0; i < 3; i++ {
		resp := ask()
		if !strings.HasPrefix(resp, "HTTP/1.1 401") || !strings.Contains(resp, "WWW-Authenticate: Basic") {
			t.Fatalf("connection %d: %q", i, resp)
		}
		select {
		case err := <-exited:
			t.Fatalf("the gate exited after connection %d (%v): a v7 unit needs one long-lived server", i, err)
		default:
		}
	}
}

// Installing v7 over v6 removes the per-connection template; uninstalling
// removes whichever is there.
func TestInstallReplacesV6Template(t *testing.T) {
	fs := &fakeSystemd{available: true}
	m := testGateManager(t, fs)
	ctx := context.Background()
	dir := filepath.Join(m.Env.Home, ".config", "systemd", "user")
	legacy := filepath.Join(dir, systemd.LegacyGateServiceName)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(legacy, []byte("# terok-gate-version: 6\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Start(ctx, testkit.FreePort(t), false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(legacy); !os.IsNotExist(err) {
		t.Fatalf("v6 template left next to the v7 service: %v", err)
	}
	for _, n := range []string{systemd.GateSocketName, systemd.GateServiceName} {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			t.Fatalf("%s not installed: %v", n, err)
		}
	}
	if err := os.WriteFile(legacy, []byte("# terok-gate-version: 6\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.Uninstall(ctx); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{systemd.GateSocketName, systemd.GateServiceName, systemd.LegacyGateServiceName} {
		if _, err := os.Stat(filepath.Join(dir, n)); !os.IsNotExist(err) {
			t.Fatalf("%s left after uninstall: %v", n, err)
		}
	}
}
