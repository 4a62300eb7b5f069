package daemonctl

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"terok.dev/sandbox/common/config"
)

func TestRender(t *testing.T) {
	out, err := Render("# v: {{V}}\nExecStart={{BIN}} --port={{PORT}} --x={{PORT}}\n", map[string]string{"V": "6", "BIN": "/usr/bin/g", "PORT": "9418"})
	if err != nil || out != "# v: 6\nExecStart=/usr/bin/g --port=9418 --x=9418\n" {
		t.Fatalf("Render = %q, %v", out, err)
	}
	for _, bad := range []string{"/a\nExecStartPre=/bin/evil", "/a\rb", "/a\x00", "/with space", `/q"uote`, `/back\slash`} {
		if _, err := Render("X={{P}}", map[string]string{"P": bad}); err == nil {
			t.Errorf("Render accepted %q", bad)
		}
	}
	if _, err := Render("X={{MISSING}}", map[string]string{}); err == nil {
		t.Error("unfilled placeholder accepted")
	}
}

// TestRenderIsStable: the same template and values give the same answer
// every time, though Render's values come in a map (random order).
func TestRenderIsStable(t *testing.T) {
	bad := map[string]string{"A": "/a b", "B": "/b\nx", "C": `/c"`, "D": "/d"}
	nested := map[string]string{"A": "{{B}}", "B": "/b", "C": "{{A}}"}
	for i := 0; i < 50; i++ {
		if _, err := Render("{{A}}{{B}}{{C}}{{D}}", bad); err == nil || !strings.Contains(err.Error(), "value for A ") {
			t.Fatalf("run %d: several bad values: %v, want the error for A", i, err)
		}
		if out, err := Render("X={{C}}", nested); err == nil || !strings.Contains(err.Error(), "{{A}}") {
			t.Fatalf("run %d: a value naming another placeholder: %q, %v; want it refused as unfilled", i, out, err)
		}
	}
	if out, err := Render("X={{B}}", map[string]string{}); err == nil {
		t.Fatalf("no values: %q accepted", out)
	}
}

func TestInstalledVersion(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o644)
		return p
	}
	const stamp = "# terok-gate-version:"
	if v := InstalledVersion(filepath.Join(dir, "none"), stamp); v != StampMissing {
		t.Errorf("missing = %d", v)
	}
	if v := InstalledVersion(write("a", "# terok-gate-version: 6\n[Unit]\n"), stamp); v != 6 {
		t.Errorf("v = %d", v)
	}
	if v := InstalledVersion(write("b", "[Unit]\n"), stamp); v != StampUnversioned {
		t.Errorf("unversioned = %d", v)
	}
	if v := InstalledVersion(write("c", "# terok-gate-version: six\n"), stamp); v != StampUnversioned {
		t.Errorf("unparseable = %d", v)
	}
	if DescribeVersion(5) != "v5" || DescribeVersion(StampUnversioned) != "unversioned" {
		t.Error("DescribeVersion")
	}
}

func TestUserUnitDir(t *testing.T) {
	env := func(euid int, xdg string) config.Env {
		return config.Env{EUID: euid, Home: "/home/u", Getenv: func(k string) string {
			if k == "XDG_CONFIG_HOME" {
				return xdg
			}
			return ""
		}}
	}
	if d, err := UserUnitDir(env(1000, "")); err != nil || d != "/home/u/.config/systemd/user" {
		t.Errorf("default: %q %v", d, err)
	}
	if d, err := UserUnitDir(env(1000, "/home/u/cfg")); err != nil || d != "/home/u/cfg/systemd/user" {
		t.Errorf("xdg inside home: %q %v", d, err)
	}
	if _, err := UserUnitDir(env(1000, "/etc")); err == nil {
		t.Error("XDG_CONFIG_HOME outside home accepted")
	}
	if _, err := UserUnitDir(env(1000, "/home/u/../other")); err == nil {
		t.Error("escaping XDG_CONFIG_HOME accepted")
	}
	if _, err := UserUnitDir(env(0, "")); err == nil {
		t.Error("root accepted")
	}
}

// TestHelperDaemon stands in for a daemon when started by TestPIDIdentity.
func TestHelperDaemon(t *testing.T) {
	if os.Getenv("TEROK_HELPER_DAEMON") != "1" {
		t.Skip("helper process for TestPIDIdentity")
	}
	time.Sleep(30 * time.Second)
}

// A real process carrying --pid-file=<path> is ours; a foreign one is never
// signalled, even when a PID file names it.
func TestPIDIdentity(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "d.pid")
	// A process whose command line carries the daemon's --pid-file argument:
	// this test binary, running TestHelperDaemon.
	ours := exec.Command(os.Args[0], "-test.run=^TestHelperDaemon$", "--", "--pid-file="+pidFile)
	ours.Env = append(os.Environ(), "TEROK_HELPER_DAEMON=1")
	if err := ours.Start(); err != nil {
		t.Fatal(err)
	}
	defer ours.Process.Kill()
	foreign := exec.Command("sleep", "30")
	if err := foreign.Start(); err != nil {
		t.Fatal(err)
	}
	defer foreign.Process.Kill()

	// Right after fork the child's cmdline is still the test binary's; wait
	// until it has exec'd.
	deadline := time.Now().Add(10 * time.Second)
	for !Owned(ours.Process.Pid, pidFile, "") {
		if time.Now().After(deadline) {
			t.Fatal("child never showed its --pid-file argument")
		}
		time.Sleep(5 * time.Millisecond)
	}
	os.WriteFile(pidFile, []byte(itoa(ours.Process.Pid)+"\n"), 0o600)
	if pid, ok := Running(pidFile, ""); !ok || pid != ours.Process.Pid {
		t.Fatalf("Running = %d %v", pid, ok)
	}
	if _, ok := Running(pidFile, "terok-gate"); ok {
		t.Error("executable base name not checked")
	}
	if Owned(ours.Process.Pid, filepath.Join(dir, "other.pid"), "") {
		t.Error("another configuration's PID file accepted")
	}

	os.WriteFile(pidFile, []byte(itoa(foreign.Process.Pid)), 0o600)
	if _, ok := Running(pidFile, ""); ok {
		t.Error("foreign process considered ours")
	}
	if Stop(pidFile, "") {
		t.Error("foreign process signalled")
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Error("PID file not removed")
	}
	if foreign.ProcessState != nil {
		t.Error("foreign process died")
	}

	os.WriteFile(pidFile, []byte(itoa(ours.Process.Pid)), 0o600)
	if !Stop(pidFile, "") {
		t.Fatal("our daemon not stopped")
	}
	done := make(chan error, 1)
	go func() { done <- ours.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("SIGTERM did not end our process")
	}
	os.WriteFile(pidFile, []byte("garbage"), 0o600)
	if Stop(pidFile, "") {
		t.Error("garbage PID file acted on")
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestSystemdUnavailableIsReported(t *testing.T) {
	s := Systemd{Systemctl: filepath.Join(t.TempDir(), "no-systemctl")}
	if s.Available(context.Background()) {
		t.Error("missing systemctl reported available")
	}
	if s.IsActive(context.Background(), "x.socket") {
		t.Error("missing systemctl reported active")
	}
	if err := s.Call(context.Background(), "daemon-reload"); err == nil {
		t.Error("missing systemctl call succeeded")
	}
}

func TestAvailableReadsTheState(t *testing.T) {
	dir := t.TempDir()
	fake := func(out string, code int) Systemd {
		p := filepath.Join(dir, "systemctl-"+strconv.Itoa(code)+"-"+strings.ReplaceAll(out, " ", "_"))
		os.WriteFile(p, []byte("#!/bin/sh\necho '"+out+"'\nexit "+strconv.Itoa(code)+"\n"), 0o755)
		return Systemd{Systemctl: p}
	}
	ctx := context.Background()
	for _, tc := range []struct {
		out  string
		code int
		want bool
	}{{"running", 0, true}, {"degraded", 1, true}, {"starting", 1, true}, {"offline", 1, false}, {"", 1, false}, {"maintenance", 3, false}} {
		if got := fake(tc.out, tc.code).Available(ctx); got != tc.want {
			t.Errorf("%q exit %d: Available = %v, want %v", tc.out, tc.code, got, tc.want)
		}
	}
}
