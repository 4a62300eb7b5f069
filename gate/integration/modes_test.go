package integration

import (
	"bytes"
	"net"
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

func TestDetachPIDFileAndAdminTokenFromEnv(t *testing.T) {
	f := newFixture(t)
	port := testkit.FreePort(t)
	pidFile := filepath.Join(f.dir, "run", "sub", "gate.pid")
	cmd := exec.Command(gateBin, "--base-path="+f.base, "--token-file="+f.tokfile,
		"--port="+strconv.Itoa(port), "--detach", "--pid-file="+pidFile)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + f.home, "TEROK_GATE_ADMIN_TOKEN=" + adminTok}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("--detach: %v\n%s", err, out)
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("PID file: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatalf("PID file content %q", data)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Split(strings.TrimSuffix(string(cmdline), "\x00"), "\x00")
	if filepath.Base(args[0]) != "terok-gate" || !contains(args, "--pid-file="+pidFile) {
		t.Fatalf("background argv %q fails the identity check", args)
	}
	if strings.Contains(string(cmdline), adminTok) {
		t.Fatal("admin token on the daemon's command line")
	}
	// Already bound by the time --detach returned; the admin token works.
	f.git("", "clone", "-q", "http://"+adminTok+"@127.0.0.1:"+strconv.Itoa(port)+"/other.git", filepath.Join(f.dir, "c"))
	// A second instance on the same port fails in the foreground.
	cmd2 := exec.Command(gateBin, "--base-path="+f.base, "--token-file="+f.tokfile,
		"--port="+strconv.Itoa(port), "--detach", "--pid-file="+pidFile+"2")
	if out, err := cmd2.CombinedOutput(); err == nil || !strings.Contains(string(out), "bind") {
		t.Fatalf("second --detach on a used port: %v %s", err, out)
	}
	// SIGTERM stops it.
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if stat, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); bytes.Contains(stat, []byte(") Z ")) {
			break // exited; a zombie until its new parent reaps it
		}
		if time.Now().After(deadline) {
			t.Fatal("detached gate ignores SIGTERM")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// socketActivate runs terok-gate under systemd-socket-activate.
func socketActivate(t *testing.T, f *fixture, activateArgs, gateArgs []string) int {
	t.Helper()
	sa, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("systemd-socket-activate not installed (Debian package systemd)")
	}
	port := testkit.FreePort(t)
	args := append([]string{"-l", "127.0.0.1:" + strconv.Itoa(port)}, activateArgs...)
	args = append(args, gateBin, "--base-path="+f.base, "--token-file="+f.tokfile)
	args = append(args, gateArgs...)
	cmd := exec.Command(sa, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + f.home}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("systemd-socket-activate stderr:\n%s", stderr.String())
		}
	})
	waitPort(t, port, done)
	return port
}

func TestSocketActivationInetdPerConnection(t *testing.T) {
	f := newFixture(t)
	port := socketActivate(t, f, []string{"--inetd", "-a"}, []string{"--inetd"})
	url := "http://" + f.tokProj + "@127.0.0.1:" + strconv.Itoa(port) + "/proj.git"
	for i := 0; i < 2; i++ {
		dst := filepath.Join(f.dir, "c"+strconv.Itoa(i))
		f.git("", "clone", "-q", url, dst)
		if n := f.git(dst, "rev-list", "--count", "HEAD"); n != "3" {
			t.Fatalf("clone %d: %s commits", i, n)
		}
	}
	code, _ := raw(t, port, "GET /other.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"+basic(f.tokProj)+"\r\n")
	if code != 403 {
		t.Fatalf("other project via inetd: %d", code)
	}
	if code, _ := raw(t, port, "GARBAGE\r\n\r\n"); code != 400 {
		t.Fatalf("malformed request line via inetd: %d", code)
	}
}

func TestSocketActivationListenFDs(t *testing.T) {
	f := newFixture(t)
	// No mode flag: the gate serves the passed listening socket (LISTEN_FDS).
	port := socketActivate(t, f, nil, nil)
	url := "http://" + f.tokProj + "@127.0.0.1:" + strconv.Itoa(port) + "/proj.git"
	for i := 0; i < 3; i++ { // one long-lived server handles them all
		f.git("", "clone", "-q", url, filepath.Join(f.dir, "c"+strconv.Itoa(i)))
	}
}

// A Type=notify unit with FileDescriptorName=gate: the gate serves the
// named socket and tells systemd READY=1 (docs/install.md, Socket
// activation and readiness), then STOPPING=1 on SIGTERM.
func TestSocketActivationNamedNotify(t *testing.T) {
	f := newFixture(t)
	notify := filepath.Join(f.dir, "notify")
	nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	port := socketActivate(t, f, []string{"--fdname=gate", "-E", "NOTIFY_SOCKET=" + notify}, nil)
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 256)
	n, err := nc.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Fatalf("notification %q %v, want READY=1", buf[:n], err)
	}
	url := "http://" + f.tokProj + "@127.0.0.1:" + strconv.Itoa(port) + "/proj.git"
	f.git("", "clone", "-q", url, filepath.Join(f.dir, "named"))
}

// A descriptor the gate does not serve is a unit error, not ignored.
func TestSocketActivationUnwantedDescriptor(t *testing.T) {
	sa, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("systemd-socket-activate not installed (Debian package systemd)")
	}
	f := newFixture(t)
	port := testkit.FreePort(t)
	cmd := exec.Command(sa, "-l", "127.0.0.1:"+strconv.Itoa(port), "-l", filepath.Join(f.dir, "x.sock"), "--fdname=gate:extra", gateBin,
		"--base-path="+f.base, "--token-file="+f.tokfile)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + f.home}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	defer func() { cmd.Process.Kill(); <-done }()
	for i := 0; i < 500; i++ {
		if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
			c.Close()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("gate kept running with a descriptor it does not serve")
	}
	if !strings.Contains(stderr.String(), "named extra, which it does not serve") {
		t.Fatalf("stderr: %s", stderr.String())
	}
}

func TestAdminTokenFlagWinsOverEnv(t *testing.T) {
	f := newFixture(t)
	flagTok := "terok-g-f1a9f1a9f1a9f1a9f1a9f1a9f1a9f1a9"
	g := f.startGate([]string{"--admin-token=" + flagTok}, "TEROK_GATE_ADMIN_TOKEN="+adminTok)
	status := func(tok string) int {
		code, _ := raw(t, g.port, "GET /other.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"+basic(tok)+"\r\n")
		return code
	}
	if c := status(flagTok); c != 200 {
		t.Fatalf("--admin-token: %d", c)
	}
	if c := status(adminTok); c != 403 {
		t.Fatalf("environment admin token used although the flag was given: %d", c)
	}
}
