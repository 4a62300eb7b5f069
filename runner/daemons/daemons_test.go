package daemons

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/common/testkit"
)

// testEnv is a non-root user with a home and state of their own.
func testEnv(t *testing.T) config.Env {
	t.Helper()
	dir := t.TempDir()
	vars := testkit.RootVars(dir)
	vars["XDG_CONFIG_HOME"], vars["PATH"] = filepath.Join(dir, "home", ".config"), os.Getenv("PATH")
	return testkit.Env(vars, 1000, filepath.Join(dir, "home"))
}

// binDir is TEROK_BIN_DIR when it holds the daemons, else a directory the
// two daemons are built into for this test.
func binDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("TEROK_BIN_DIR"); d != "" {
		if _, err := os.Stat(filepath.Join(d, "terok-gate")); err == nil {
			return d
		}
	}
	dir := t.TempDir()
	for bin, pkg := range map[string]string{
		"terok-gate":             "terok.dev/sandbox/gate/cmd/terok-gate",
		"terok-credential-proxy": "terok.dev/sandbox/credproxy/cmd/terok-credential-proxy",
		"terok-ssh-agent":        "terok.dev/sandbox/sshagent/cmd/terok-ssh-agent",
	} {
		if b, err := exec.Command("go", "build", "-o", filepath.Join(dir, bin), pkg).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", bin, err, b)
		}
	}
	return dir
}

func TestBinDirRefusesWhatIsNoExecutable(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "terok-gate"), []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "terok-credential-proxy"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, dir, bin string }{
		{"missing directory", filepath.Join(dir, "nope"), "terok-gate"},
		{"not executable", dir, "terok-gate"},
		{"a directory", dir, "terok-credential-proxy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Options{BinDir: tc.dir}.findBinary()(tc.bin)
			if err == nil || !strings.Contains(err.Error(), tc.bin) || !strings.Contains(err.Error(), tc.dir) {
				t.Fatalf("err = %v, want one naming %s and %s", err, tc.bin, tc.dir)
			}
		})
	}
	if f := (Options{}).findBinary(); f != nil {
		t.Fatal("an empty BinDir must keep the default lookup")
	}
}

// The gate's whole daemon lifecycle through the public API, with the real
// terok-gate.
func TestGateDaemonLifecycle(t *testing.T) {
	env := testEnv(t)
	cfg := config.Defaults(env)
	cfg.GatePort = testkit.FreePort(t)
	g := NewGate(cfg, Options{Env: env, BinDir: binDir(t)})
	ctx := context.Background()
	if err := g.Ensure(ctx); err == nil {
		t.Fatal("Ensure before Start succeeded")
	}
	mode, err := g.Start(ctx, GateStart{Daemon: true})
	if err != nil || mode != ModeDaemon {
		t.Fatalf("Start: %s %v", mode, err)
	}
	t.Cleanup(func() { g.Stop() })
	if st := g.Status(ctx); st != (GateStatus{Mode: ModeDaemon, Running: true, Port: cfg.GatePort}) {
		t.Fatalf("Status = %+v", st)
	}
	if pid, ok := g.DaemonPID(); !ok || pid <= 0 || g.SocketInstalled() {
		t.Fatalf("DaemonPID = %d %v, SocketInstalled = %v", pid, ok, g.SocketInstalled())
	}
	if err := g.Ensure(ctx); err != nil {
		t.Fatalf("Ensure while running: %v", err)
	}
	if _, err := g.Start(ctx, GateStart{Daemon: true}); err == nil {
		t.Fatal("a second Start succeeded")
	}
	if !g.Stop() {
		t.Fatal("Stop signalled nothing")
	}
	if st := g.Status(ctx); st.Mode != ModeNone || st.Running {
		t.Fatalf("Status after Stop = %+v", st)
	}
	if g.Stop() {
		t.Fatal("a second Stop signalled something")
	}
	if _, ok := g.DaemonPID(); ok {
		t.Fatal("DaemonPID after Stop")
	}
}

// The proxy's daemon lifecycle through the public API, with the real
// terok-credential-proxy: Ensure checks the proxy and the SSH agent port.
func TestProxyDaemonLifecycle(t *testing.T) {
	env := testEnv(t)
	cfg := config.Defaults(env)
	ports := testkit.FreePorts(t, 2)
	cfg.ProxyPort, cfg.SSHAgentPort = ports[0], ports[1]
	p := NewProxy(cfg, Options{Env: env, BinDir: binDir(t)})
	ctx := context.Background()
	if err := p.Ensure(ctx); err == nil {
		t.Fatal("Ensure before Start succeeded")
	}
	if err := p.Start(ctx, ProxyStart{LogLevel: "DEBUG"}); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { p.Stop() })
	st := p.Status(ctx)
	if st.Mode != string(ModeDaemon) || !st.Running || !st.Healthy {
		t.Fatalf("Status = %+v", st)
	}
	if err := p.Ensure(ctx); err != nil {
		t.Fatalf("Ensure while running: %v", err)
	}
	if pid, ok := p.DaemonPID(); !ok || pid <= 0 || p.SocketInstalled() {
		t.Fatalf("DaemonPID = %d %v, SocketInstalled = %v", pid, ok, p.SocketInstalled())
	}
	if !p.Stop() {
		t.Fatal("Stop signalled nothing")
	}
}

// As root no user units may be installed: neither daemon reports systemd
// usable, whatever the user manager would say, and none is installed.
func TestSystemdNotUsableAsRoot(t *testing.T) {
	env := testEnv(t)
	env.EUID = 0
	cfg := config.Defaults(env)
	ctx := context.Background()
	g, p := NewGate(cfg, Options{Env: env}), NewProxy(cfg, Options{Env: env})
	if g.SystemdUsable(ctx) || p.SystemdUsable(ctx) {
		t.Error("systemd user units reported usable as root")
	}
	if g.SocketInstalled() || p.SocketInstalled() {
		t.Error("a socket unit reported installed for root")
	}
}
