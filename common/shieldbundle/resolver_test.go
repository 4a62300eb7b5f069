package shieldbundle

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sleeperEnv makes the test binary, started by startExact with an argv of
// the test's choosing, sleep instead of running tests: a real process whose
// /proc/PID/cmdline is exactly that argv.
const sleeperEnv = "TEROK_SHIELDBUNDLE_TEST_SLEEPER"

func TestMain(m *testing.M) {
	if os.Getenv(sleeperEnv) == "1" {
		time.Sleep(30 * time.Second)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func startExact(t *testing.T, argv ...string) int {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := &exec.Cmd{Path: self, Args: argv, Env: append(os.Environ(), sleeperEnv+"=1")}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Process.Kill(); _ = c.Wait() })
	// The child's cmdline is its argv only once it runs: under -race the
	// runtime may re-exec itself at start, and a look in that window read
	// an empty cmdline (a CI flake). Wait until the kernel shows the argv.
	want := strings.Join(argv, "\x00") + "\x00"
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(c.Process.Pid), "cmdline"))
		if string(b) == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("child %d never showed cmdline %q (last %q)", c.Process.Pid, want, b)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return c.Process.Pid
}

func TestResolverArgs(t *testing.T) {
	if got, want := ResolverArgs("/s/t/shield"), []string{"resolver", "--state-dir=/s/t/shield"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("ResolverArgs = %q, want %q", got, want)
	}
}

func TestIsOurResolver(t *testing.T) {
	dir := t.TempDir()
	hook := "/usr/local/bin/terok-shield-hook"
	tests := []struct {
		name string
		argv []string
		want bool
	}{
		{"ours", append([]string{hook}, ResolverArgs(dir)...), true},
		{"bare name", append([]string{"terok-shield-hook"}, ResolverArgs(dir)...), true},
		{"other state dir", append([]string{hook}, ResolverArgs(dir+"x")...), false},
		{"parent state dir", append([]string{hook}, ResolverArgs(filepath.Dir(dir))...), false},
		{"extra argument", append(append([]string{hook}, ResolverArgs(dir)...), "x"), false},
		{"missing argument", []string{hook, "resolver"}, false},
		{"other subcommand", []string{hook, "poststop", ResolverStateDirArg(dir)}, false},
		{"other binary", append([]string{"/usr/bin/terok-shield-hook-x"}, ResolverArgs(dir)...), false},
		{"hook as directory", append([]string{"/terok-shield-hook/sh"}, ResolverArgs(dir)...), false},
	}
	for _, tc := range tests {
		pid := startExact(t, tc.argv...)
		if got := IsOurResolver(pid, dir); got != tc.want {
			b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
			t.Errorf("%s: IsOurResolver = %v, want %v (cmdline %q)", tc.name, got, tc.want, b)
		}
	}
	if IsOurResolver(os.Getpid(), dir) || IsOurResolver(0, dir) || IsOurResolver(-1, dir) || IsOurResolver(os.Getpid(), "") {
		t.Fatal("wrong process accepted")
	}
}

func TestResolverPID(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, FileResolverPID)
	if _, ok := ResolverPID(dir); ok {
		t.Fatal("missing resolver.pid accepted")
	}
	pid := startExact(t, append([]string{"/x/terok-shield-hook"}, ResolverArgs(dir)...)...)
	other := startExact(t, append([]string{"/x/terok-shield-hook"}, ResolverArgs(dir+"o")...)...)
	tests := []struct {
		content string
		wantPID int
		wantOK  bool
	}{
		{strconv.Itoa(pid) + "\n", pid, true},
		{strconv.Itoa(other) + "\n", 0, false},
		{"not a pid\n", 0, false},
		{"-1\n", 0, false},
		{"", 0, false},
	}
	for _, tc := range tests {
		if err := os.WriteFile(pidFile, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, ok := ResolverPID(dir)
		if got != tc.wantPID || ok != tc.wantOK {
			t.Errorf("resolver.pid %q: ResolverPID = %d %v, want %d %v", tc.content, got, ok, tc.wantPID, tc.wantOK)
		}
	}
}
