package shield

import (
	"context"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"terok.dev/sandbox/common/shieldbundle"
)

// fakeResolver is a real process whose command line passes the resolver
// identity check: a copy of dash named terok-shield-hook, run as
// `terok-shield-hook resolver --state-dir=DIR`, which makes dash read the
// script "resolver" from its working directory. The script counts the
// SIGHUPs it gets in DIR/hups and exits on SIGTERM (or, with ignoreTerm,
// only on SIGKILL).
type fakeResolver struct {
	cmd  *exec.Cmd
	dir  string
	done chan struct{}
}

func startFakeResolver(t *testing.T, stateDir string, ignoreTerm bool) *fakeResolver {
	t.Helper()
	return startFakeResolverWith(t, stateDir, ignoreTerm, "")
}

// startFakeResolverWith is startFakeResolver with extra shell lines run
// before the loop (more traps, files).
func startFakeResolverWith(t *testing.T, stateDir string, ignoreTerm bool, extra string) *fakeResolver {
	t.Helper()
	dash, err := exec.LookPath("dash")
	if err != nil {
		t.Skip("dash not installed")
	}
	// Under nohup SIGHUP is ignored, and a shell started with a signal
	// ignored may not trap it (POSIX): catch it in this process instead, so
	// the child starts with the default disposition and its trap works.
	if signal.Ignored(syscall.SIGHUP) {
		signal.Notify(make(chan os.Signal, 1), syscall.SIGHUP)
	}
	bin := t.TempDir()
	data, err := os.ReadFile(dash)
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(bin, shieldbundle.HookBinary)
	if err := os.WriteFile(exe, data, 0o755); err != nil {
		t.Fatal(err)
	}
	term := `trap 'exit 0' TERM`
	if ignoreTerm {
		term = `trap '' TERM`
	}
	hups := filepath.Join(stateDir, "hups")
	script := "trap 'echo hup >> " + hups + "' HUP\n" + term + "\n" + extra + "echo ready > " + filepath.Join(bin, "ready") + "\nwhile :; do sleep 0.05; done\n"
	if err := os.WriteFile(filepath.Join(bin, "resolver"), []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, shieldbundle.ResolverArgs(stateDir)...)
	cmd.Dir = bin
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f := &fakeResolver{cmd: cmd, dir: stateDir, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(f.done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-f.done
	})
	deadline := time.Now().Add(10 * time.Second)
	for !exists(filepath.Join(bin, "ready")) {
		if time.Now().After(deadline) {
			t.Fatal("fake resolver did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !shieldbundle.IsOurResolver(cmd.Process.Pid, stateDir) {
		t.Fatal("fake resolver fails the identity check")
	}
	writeText(t, filepath.Join(stateDir, shieldbundle.FileResolverPID), strconv.Itoa(cmd.Process.Pid)+"\n")
	return f
}

func (f *fakeResolver) pid() int { return f.cmd.Process.Pid }

// hups waits for the count to reach want (the trap runs between the
// script's sleeps, which a loaded machine can stretch) and returns the
// count; the deadline is a liveness bound only.
func (f *fakeResolver) hups(t *testing.T, want int) int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		data, _ := os.ReadFile(filepath.Join(f.dir, "hups"))
		n := strings.Count(string(data), "hup")
		if n >= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (f *fakeResolver) exited(limit time.Duration) bool {
	select {
	case <-f.done:
		return true
	case <-time.After(limit):
		return false
	}
}

// foreignProcess is a live process that is not a resolver (a plain sleep).
func foreignProcess(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd.Process.Pid
}

func TestSignalResolver(t *testing.T) {
	s := New(Config{}, Options{})
	t.Run("reload reaches our resolver", func(t *testing.T) {
		dir := t.TempDir()
		r := startFakeResolver(t, dir, false)
		for i := 1; i <= 2; i++ {
			if err := s.reloadResolver(dir); err != nil {
				t.Fatal(err)
			}
			if n := r.hups(t, i); n != i {
				t.Fatalf("resolver got %d SIGHUPs, want %d", n, i)
			}
		}
	})
	for _, tt := range []struct {
		name    string
		pidFile func(t *testing.T, dir string) string // content; "" → no file
		want    string
		removed bool
	}{
		{"no pid file", func(*testing.T, string) string { return "" }, "no resolver.pid", false},
		{"garbage", func(*testing.T, string) string { return "x\n" }, "unreadable", true},
		{"dead", func(t *testing.T, _ string) string {
			cmd := exec.Command("true")
			if err := cmd.Run(); err != nil {
				t.Fatal(err)
			}
			return strconv.Itoa(cmd.Process.Pid) + "\n"
		}, "is dead", true},
		{"foreign process", func(t *testing.T, _ string) string { return strconv.Itoa(foreignProcess(t)) + "\n" }, "is not the container's resolver (stale resolver.pid)", true},
		{"resolver of another task", func(t *testing.T, _ string) string {
			return strconv.Itoa(startFakeResolver(t, t.TempDir(), false).pid()) + "\n"
		}, "is not the container's resolver", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			pidPath := filepath.Join(dir, shieldbundle.FileResolverPID)
			if c := tt.pidFile(t, dir); c != "" {
				writeText(t, pidPath, c)
			}
			err := s.reloadResolver(dir)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "container DNS is broken. Restart the container to recover.") {
				t.Fatalf("err = %v, want %q and the DNS-broken hint", err, tt.want)
			}
			if tt.removed && exists(pidPath) {
				t.Error("stale pid file kept")
			}
		})
	}
}

func TestStopDaemon(t *testing.T) {
	ctx := context.Background()
	t.Run("SIGTERM", func(t *testing.T) {
		dir := t.TempDir()
		r := startFakeResolver(t, dir, false)
		pid, err := stopDaemon(ctx, dir, kindResolver)
		if err != nil || pid != r.pid() {
			t.Fatalf("stop: %d %v", pid, err)
		}
		if !r.exited(2*time.Second) || exists(filepath.Join(dir, shieldbundle.FileResolverPID)) {
			t.Fatal("resolver not stopped or pid file kept")
		}
	})
	t.Run("SIGKILL after the grace period", func(t *testing.T) {
		dir := t.TempDir()
		r := startFakeResolver(t, dir, true)
		pid, err := stopDaemon(ctx, dir, kindResolver)
		if err != nil || pid != r.pid() || !r.exited(2*time.Second) {
			t.Fatalf("stop: %d %v", pid, err)
		}
	})
	t.Run("foreign process is never signalled", func(t *testing.T) {
		dir := t.TempDir()
		other := foreignProcess(t)
		writeText(t, filepath.Join(dir, shieldbundle.FileDnsmasqPID), strconv.Itoa(other)+"\n")
		pid, err := stopDaemon(ctx, dir, kindDnsmasq)
		if err != nil || pid != 0 || !processAlive(other) {
			t.Fatalf("stop: %d %v alive=%v", pid, err, processAlive(other))
		}
		if exists(filepath.Join(dir, shieldbundle.FileDnsmasqPID)) {
			t.Fatal("stale pid file kept")
		}
	})
	t.Run("nothing to stop", func(t *testing.T) {
		if pid, err := stopDaemon(ctx, t.TempDir(), kindResolver); pid != 0 || err != nil {
			t.Fatalf("stop: %d %v", pid, err)
		}
	})
}

// cleanupAdapter is an adapter whose podman is a script answering inspect
// with inspectOut (exit inspectCode) and ps with psOut.
func cleanupAdapter(t *testing.T, stateDir, inspect, ps string) *Adapter {
	t.Helper()
	bin := t.TempDir()
	fakeBin(t, bin, "podman", `case "$1" in
container) `+inspect+` ;;
ps) `+ps+` ;;
*) exit 125 ;;
esac
`)
	a := &Adapter{Opts: Options{Tools: Tools{Path: bin}, EUID: os.Geteuid()}}
	a.Cfg.StateDir = stateDir
	return a
}

func taskShieldDir(t *testing.T, stateDir, task string) string {
	t.Helper()
	dir := filepath.Join(stateDir, "tasks", task, "shield")
	if err := mkdirPrivate(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestCleanup(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name, inspect string
		wantStopped   bool
		wantErr       string
	}{
		{"container removed", `echo '[]'; echo 'Error: no such container c1' >&2; exit 125`, true, ""},
		{"container created, never started", `echo '` + inspectJSON(0, nil) + `'`, true, ""},
		{"container running", `echo '` + inspectJSON(4242, nil) + `'`, false, ""},
		// Podman's own "no such" wording with anything but an empty
		// array on stdout is a failure, not a removed container.
		{"podman broken", `echo 'Error: no such container: database is locked' >&2; exit 125`, false, "database is locked"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			state := t.TempDir()
			dir := taskShieldDir(t, state, "c1")
			writeText(t, filepath.Join(dir, shieldbundle.FileContainerID), "0123456789ab\n")
			r := startFakeResolver(t, dir, false)
			a := cleanupAdapter(t, state, tt.inspect, "echo '[]'")
			a.Cfg.ShieldAudit = true
			err := a.Cleanup(ctx, "c1", filepath.Dir(dir))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if got := r.exited(2 * time.Second); got != tt.wantStopped {
				t.Fatalf("resolver stopped = %v, want %v", got, tt.wantStopped)
			}
			if exists(filepath.Join(dir, shieldbundle.FileResolverPID)) == tt.wantStopped {
				t.Fatalf("resolver.pid present = %v after stopped = %v", !tt.wantStopped, tt.wantStopped)
			}
			audit, _ := os.ReadFile(filepath.Join(dir, shieldbundle.FileAudit))
			if strings.Contains(string(audit), `"action":"cleanup"`) != tt.wantStopped {
				t.Fatalf("audit after stopped = %v: %s", tt.wantStopped, audit)
			}
		})
	}
	t.Run("no task dir or no shield dir", func(t *testing.T) {
		a := cleanupAdapter(t, t.TempDir(), "exit 99", "exit 99")
		if err := a.Cleanup(ctx, "c1", ""); err != nil {
			t.Fatal(err)
		}
		if err := a.Cleanup(ctx, "c1", t.TempDir()); err != nil {
			t.Fatal(err)
		}
	})
}

func TestStopLeaks(t *testing.T) {
	ctx := context.Background()
	state := t.TempDir()
	const running, created, exited = "aaaa00000000", "bbbb00000000", "cccc00000000"
	mk := func(task, id string) *fakeResolver {
		dir := taskShieldDir(t, state, task)
		if id != "" {
			writeText(t, filepath.Join(dir, shieldbundle.FileContainerID), id+"\n")
		}
		return startFakeResolver(t, dir, false)
	}
	rRunning := mk("t-running", running)
	rCreated := mk("t-created", created)
	rExited := mk("t-exited", exited)
	rGone := mk("t-gone", "dddd00000000")
	ps := `echo '[{"Id":"` + running + `0000","Names":["t-running"],"State":"running"},{"Id":"` + created + `0000","Names":["t-created"],"State":"created"},{"Id":"` + exited + `0000","Names":["t-exited"],"State":"exited"}]'`
	a := cleanupAdapter(t, state, "exit 125", ps)
	// Young helpers are never leaked (a launch may be in progress).
	if stopped, issues := a.StopLeaks(ctx); len(stopped)+len(issues) != 0 {
		t.Fatalf("young helpers: stopped %q issues %q", stopped, issues)
	}
	a.Opts.Now = func() time.Time { return time.Now().Add(time.Minute) }
	stopped, issues := a.StopLeaks(ctx)
	if len(issues) != 0 {
		t.Fatalf("issues %q", issues)
	}
	want := []string{
		"stopped leaked resolver for task t-created (pid " + strconv.Itoa(rCreated.pid()) + ")",
		"stopped leaked resolver for task t-exited (pid " + strconv.Itoa(rExited.pid()) + ")",
		"stopped leaked resolver for task t-gone (pid " + strconv.Itoa(rGone.pid()) + ")",
	}
	if strings.Join(stopped, "|") != strings.Join(want, "|") {
		t.Fatalf("stopped %q, want %q", stopped, want)
	}
	if !rExited.exited(2*time.Second) || !rGone.exited(2*time.Second) {
		t.Fatal("leaked resolvers still running")
	}
	if !rCreated.exited(2*time.Second) || rRunning.exited(100*time.Millisecond) {
		t.Fatal("a resolver of a running container was stopped")
	}
	// podman failing: an issue, nothing stopped.
	a = cleanupAdapter(t, state, "exit 125", "echo boom >&2; exit 125")
	stopped, issues = a.StopLeaks(ctx)
	if len(stopped) != 0 || len(issues) != 1 || !strings.Contains(issues[0], "boom") {
		t.Fatalf("podman failing: %q %q", stopped, issues)
	}
}

func TestLeaked(t *testing.T) {
	for _, tt := range []struct {
		state string
		age   time.Duration
		want  bool
	}{
		{"", time.Minute, true}, {"exited", time.Minute, true}, {"stopped", time.Hour, true},
		{"created", time.Minute, true}, {"", time.Second, false}, {"exited", time.Second, false},
		{"created", time.Second, false}, {"running", time.Hour, false}, {"paused", time.Hour, false},
	} {
		if got := leaked(tt.state, tt.age); got != tt.want {
			t.Errorf("leaked(%q, %s) = %v", tt.state, tt.age, got)
		}
	}
}

// TestStateOf: a short id that starts several ids gives the same state every
// time (map order is random), a live one over a gone one.
func TestStateOf(t *testing.T) {
	short := "0123456789ab"
	states := map[string]string{short + "ff": "exited", short + "00": "created", short + "77": "running", short + "11": "exited", "fedcba987654": "running"}
	for i := 0; i < 50; i++ {
		if got := stateOf(states, short); got != "running" {
			t.Fatalf("run %d: stateOf = %q, want running", i, got)
		}
	}
	delete(states, short+"77")
	for i := 0; i < 50; i++ {
		if got := stateOf(states, short); got != "created" {
			t.Fatalf("run %d: stateOf = %q, want created (the first id)", i, got)
		}
	}
	if got := stateOf(states, "aaaaaaaaaaaa"); got != "" {
		t.Fatalf("no such container: %q", got)
	}
	if got := stateOf(states, ""); got != "" {
		t.Fatalf("empty id: %q", got)
	}
}

func TestProcessStarted(t *testing.T) {
	started, ok := processStarted(os.Getpid())
	if age := time.Since(started); !ok || age < -time.Second || age > 24*time.Hour {
		t.Fatalf("start of this test process %v (%s ago) %v", started, age, ok)
	}
	if _, ok := processStarted(1 << 30); ok {
		t.Fatal("start of a missing process")
	}
}
