package integration

import (
	"bytes"
	"encoding/json"
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
	"terok.dev/sandbox/common/version"
)

// waitGone waits until pid has exited (or is a zombie of its new parent).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second) // hang guard only
	for syscall.Kill(pid, 0) == nil {
		if stat, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); bytes.Contains(stat, []byte(") Z ")) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d did not stop", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// foregroundLog runs a foreground gate with extra flags and environment,
// makes one refused request, stops it with SIGTERM and returns its stderr.
func foregroundLog(t *testing.T, f *fixture, extra []string, env ...string) string {
	t.Helper()
	port := testkit.FreePort(t)
	errFile := filepath.Join(t.TempDir(), "stderr")
	ef, err := os.Create(errFile)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	cmd := exec.Command(gateBin, append([]string{"--base-path=" + f.base, "--token-file=" + f.tokfile, "--foreground",
		"--port=" + strconv.Itoa(port)}, extra...)...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + f.home}, env...)
	cmd.Stderr = ef
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	waitPort(t, port, done)
	if code, _ := raw(t, port, "GET /nope.git/info/refs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); code < 400 {
		t.Fatalf("refused request answered %d", code)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("gate after SIGTERM: %v", err)
	}
	b, _ := os.ReadFile(errFile)
	return string(b) + "\nport=" + strconv.Itoa(port)
}

func TestLogJSONStartListenStop(t *testing.T) {
	f := newFixture(t)
	out := foregroundLog(t, f, []string{"--log-format=json"})
	port := out[strings.LastIndex(out, "port=")+5:]
	lines := strings.Split(strings.TrimSpace(out[:strings.LastIndex(out, "\nport=")]), "\n")
	msgs := map[string]map[string]any{}
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not a JSON line: %q", l)
		}
		if _, ok := m["time"]; !ok {
			t.Errorf("no time member without JOURNAL_STREAM: %q", l)
		}
		msgs[m["msg"].(string)] = m
	}
	s := msgs["serving"]
	if s == nil || s["addr"] != "127.0.0.1:"+port || s["mode"] != "foreground" || s["version"] != version.Version || s["level"] != "INFO" {
		t.Fatalf("start line %v in\n%s", s, out)
	}
	if r := msgs["request refused"]; r == nil || r["level"] != "WARN" {
		t.Fatalf("refusal line %v in\n%s", r, out)
	}
	if msgs["stopped"] == nil {
		t.Fatalf("no stop line in\n%s", out)
	}
}

func TestLogJournalNoTimestampAndLevel(t *testing.T) {
	f := newFixture(t)
	out := foregroundLog(t, f, nil, "JOURNAL_STREAM=8:12345")
	if strings.Contains(out, "time=") || !strings.Contains(out, "level=INFO msg=serving addr=127.0.0.1:") {
		t.Fatalf("under the journal:\n%s", out)
	}
	out = foregroundLog(t, f, []string{"--log-level=error"})
	if strings.Contains(out, "request refused") || strings.Contains(out, "msg=serving") {
		t.Fatalf("--log-level=error logged below error:\n%s", out)
	}
}

func TestLogFlagsUsage(t *testing.T) {
	f := newFixture(t)
	for _, a := range []string{"--log-format=xml", "--log-level=loud"} {
		cmd := exec.Command(gateBin, "--base-path="+f.base, "--token-file="+f.tokfile, "--foreground", a)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), strings.SplitN(a, "=", 2)[0]) {
			t.Errorf("%s: %v %s", a, err, out)
		}
	}
}

// startDetached runs --detach with extra flags and returns the daemon's PID.
func startDetached(t *testing.T, f *fixture, port int, extra ...string) int {
	t.Helper()
	pidFile := filepath.Join(t.TempDir(), "gate.pid")
	cmd := exec.Command(gateBin, append([]string{"--base-path=" + f.base, "--token-file=" + f.tokfile,
		"--port=" + strconv.Itoa(port), "--detach", "--pid-file=" + pidFile}, extra...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + f.home}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("--detach: %v\n%s", err, out)
	}
	data, _ := os.ReadFile(pidFile)
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatalf("PID file %q", data)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	return pid
}

// TestLogDetachedWithoutSyslog: a detached gate with no syslog socket and
// no --log-file logs to the fallback file in its base path, never nowhere.
func TestLogDetachedWithoutSyslog(t *testing.T) {
	f := newFixture(t)
	port := testkit.FreePort(t)
	pid := startDetached(t, f, port, "--syslog-socket="+filepath.Join(t.TempDir(), "no-such-socket"))
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid)
	p := filepath.Join(f.base, "terok-gate.log")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("fallback log: %v", err)
	}
	log := string(b)
	for _, want := range []string{"level=WARN msg=\"no syslog at ", "msg=serving addr=127.0.0.1:" + strconv.Itoa(port) + " mode=detached", "msg=stopped"} {
		if !strings.Contains(log, want) {
			t.Errorf("fallback log lacks %q:\n%s", want, log)
		}
	}
	if st, _ := os.Stat(p); st == nil || st.Mode().Perm() != 0o600 {
		t.Errorf("fallback log mode %v, want 0600", st)
	}
}

// TestLogDetachedSyslog: with a syslog socket the detached gate sends its
// start there, without a timestamp of its own, at the right severity.
func TestLogDetachedSyslog(t *testing.T) {
	f := newFixture(t)
	sock := filepath.Join(t.TempDir(), "log")
	pc, err := net.ListenPacket("unixgram", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	port := testkit.FreePort(t)
	startDetached(t, f, port, "--syslog-socket="+sock, "--log-format=json")
	buf := make([]byte, 4096)
	_ = pc.SetReadDeadline(time.Now().Add(30 * time.Second)) // hang guard only
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	msg := string(buf[:n])
	if !strings.HasPrefix(msg, `<30>terok-gate: {"level":"INFO","msg":"serving","addr":"127.0.0.1:`+strconv.Itoa(port)+`"`) {
		t.Fatalf("syslog message %q", msg)
	}
	if _, err := os.Stat(filepath.Join(f.base, "terok-gate.log")); !os.IsNotExist(err) {
		t.Fatal("fallback log written although syslog answered")
	}
}
