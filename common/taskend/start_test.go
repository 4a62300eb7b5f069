package taskend

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sleeper is a child process the test owns; it is killed and reaped at the
// end of the test.
func sleeper(t testing.TB) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

// startsDir is a task-ends directory whose start records came into use an
// hour ago (FileStartsSince).
func startsDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, FileStartsSince), []byte(time.Now().Add(-time.Hour).UTC().Format(time.RFC3339Nano)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// A binding from before start records came into use (an upgrade with tasks
// running) keeps the old rule: no lease, only an end record ends it.
func TestStartsSinceExemptsOlderBindings(t *testing.T) {
	dir := t.TempDir()
	w := NewWatcher(dir, nil)
	defer w.Close()
	old := time.Now().Add(-time.Hour)
	if r, g := gone(t, w, "p-t1", old); g {
		t.Fatalf("no start records yet, an old binding is gone: %s", r)
	}
	if ok, err := Claim(dir, "p-t2"); err != nil || !ok {
		t.Fatalf("Claim: %v %v", ok, err)
	}
	if readStartsSince(dir).IsZero() {
		t.Fatal("the first claim wrote no marker")
	}
	if r, g := gone(t, w, "p-t1", old); g {
		t.Fatalf("a binding from before the marker is gone: %s", r)
	}
	w.now = func() time.Time { return time.Now().Add(time.Hour) }
	if r, g := gone(t, w, "p-t1", time.Now()); !g || r != ReasonLeaseExpired {
		t.Fatalf("a binding after the marker, unclaimed past its lease: %s %v", r, g)
	}
	if err := Record(dir, End{Container: "p-t1", Reason: ReasonStopped}); err != nil {
		t.Fatal(err)
	}
	if r, g := gone(t, w, "p-t1", old); !g || r != ReasonStopped {
		t.Fatalf("an old binding after its end: %s %v", r, g)
	}
}

func kill(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

func gone(t *testing.T, w *Watcher, c string, since time.Time) (string, bool) {
	t.Helper()
	e, g := w.Gone(c, since)
	return e.Reason, g
}

func TestStartLease(t *testing.T) {
	dir := startsDir(t)
	w := NewWatcher(dir, nil)
	defer w.Close()
	bound := time.Now()
	if r, g := gone(t, w, "p-t1", bound); g {
		t.Fatalf("a fresh binding is gone: %s", r)
	}
	w.now = func() time.Time { return bound.Add(StartLease) }
	if r, g := gone(t, w, "p-t1", bound); !g || r != ReasonLeaseExpired {
		t.Fatalf("unclaimed after the lease: %s %v", r, g)
	}
}

func TestStartClaimedByARunnerThatDies(t *testing.T) {
	dir := startsDir(t)
	w := NewWatcher(dir, nil)
	defer w.Close()
	bound := time.Now()
	runner := sleeper(t)
	if err := Confirm(dir, NewStart("p-t1", PhaseStarting, runner.Process.Pid, "")); err != nil {
		t.Fatal(err)
	}
	w.now = func() time.Time { return time.Now().Add(time.Hour) } // past the lease and the settle window
	if r, g := gone(t, w, "p-t1", bound); g {
		t.Fatalf("gone while the runner lives: %s", r)
	}
	kill(t, runner)
	if r, g := gone(t, w, "p-t1", bound); !g || r != ReasonStartFailed {
		t.Fatalf("after the runner died: %s %v", r, g)
	}
}

func TestStartRunningContainer(t *testing.T) {
	dir := startsDir(t)
	w := NewWatcher(dir, nil)
	defer w.Close()
	bound := time.Now()
	runner := sleeper(t)
	if ok, err := Claim(dir, "p-t1"); err != nil || !ok {
		t.Fatalf("Claim: %v %v", ok, err)
	}
	st, err := ReadStart(dir, "p-t1")
	if err != nil || st.Phase != PhaseStarting || st.PID != os.Getpid() || st.PIDStart == 0 {
		t.Fatalf("claimed record: %+v %v", st, err)
	}
	init := sleeper(t)
	if err := Confirm(dir, NewStart("p-t1", PhaseRunning, init.Process.Pid, "0123456789abcdef")); err != nil {
		t.Fatal(err)
	}
	_ = runner
	// A second runner of the same name does not take over a live container.
	if ok, err := Claim(dir, "p-t1"); err != nil || ok {
		t.Fatalf("Claim over a running container: %v %v", ok, err)
	}
	w.now = func() time.Time { return time.Now().Add(time.Hour) }
	if r, g := gone(t, w, "p-t1", bound); g {
		t.Fatalf("gone while the container runs: %s", r)
	}
	// A token bound later, to the running container, lives too.
	if r, g := gone(t, w, "p-t1", time.Now()); g {
		t.Fatalf("a token bound to the running container is gone: %s", r)
	}
	kill(t, init)
	e, g := w.Gone("p-t1", bound)
	if !g || e.Reason != ReasonProcessGone || e.ID != "0123456789ab" {
		t.Fatalf("after the container's process died: %+v %v", e, g)
	}
	// A token bound after that death (the next run of the name) is
	// pending, not gone.
	w.now = time.Now
	if r, g := gone(t, w, "p-t1", time.Now()); g {
		t.Fatalf("a token for the next run is gone: %s", r)
	}
	// Now the dead record may be claimed.
	if ok, err := Claim(dir, "p-t1"); err != nil || !ok {
		t.Fatalf("Claim after the death: %v %v", ok, err)
	}
}

func TestStartEndWins(t *testing.T) {
	dir := startsDir(t)
	w := NewWatcher(dir, nil)
	defer w.Close()
	bound := time.Now()
	init := sleeper(t)
	if err := Confirm(dir, NewStart("p-t1", PhaseRunning, init.Process.Pid, "")); err != nil {
		t.Fatal(err)
	}
	if err := Record(dir, End{Container: "p-t1", Reason: ReasonStopped}); err != nil {
		t.Fatal(err)
	}
	if r, g := gone(t, w, "p-t1", bound); !g || r != ReasonStopped {
		t.Fatalf("stopped, process alive: %s %v", r, g)
	}
	// A live container whose end is older than its start (a restart)
	// holds the tokens bound after the end.
	rebound := time.Now()
	if err := Confirm(dir, NewStart("p-t1", PhaseRunning, init.Process.Pid, "")); err != nil {
		t.Fatal(err)
	}
	w.now = func() time.Time { return time.Now().Add(time.Hour) }
	if r, g := gone(t, w, "p-t1", rebound); g {
		t.Fatalf("restarted container's token gone: %s", r)
	}
}

func TestStartRecycledPID(t *testing.T) {
	dir := startsDir(t)
	w := NewWatcher(dir, nil)
	defer w.Close()
	bound := time.Now()
	init := sleeper(t)
	st := NewStart("p-t1", PhaseRunning, init.Process.Pid, "")
	st.PIDStart++ // another process now has the PID
	if err := Confirm(dir, st); err != nil {
		t.Fatal(err)
	}
	if r, g := gone(t, w, "p-t1", bound); !g || r != ReasonProcessGone {
		t.Fatalf("recycled PID: %s %v", r, g)
	}
	if Alive(st) {
		t.Fatal("Alive accepted a recycled PID")
	}
}

func TestStartOtherPIDNamespace(t *testing.T) {
	dir := startsDir(t)
	w := NewWatcher(dir, nil)
	defer w.Close()
	bound := time.Now()
	st := NewStart("p-t1", PhaseRunning, 1<<22+7, "") // no such PID
	st.PIDNS = "pid:[1]"
	if err := Confirm(dir, st); err != nil {
		t.Fatal(err)
	}
	w.now = func() time.Time { return time.Now().Add(time.Hour) }
	if r, g := gone(t, w, "p-t1", bound); g {
		t.Fatalf("a record of another PID namespace ended the token: %s", r)
	}
	st.PIDNS = PIDNamespace()
	if err := Confirm(dir, st); err != nil {
		t.Fatal(err)
	}
	time.Sleep(reread + 10*time.Millisecond)
	w.now = time.Now // inside the settle window: re-read
	w.mu.Lock()
	w.readAt = time.Time{}
	w.mu.Unlock()
	if r, g := gone(t, w, "p-t1", bound); !g || r != ReasonProcessGone {
		t.Fatalf("no such PID: %s %v", r, g)
	}
}

func TestWatcherSkipsBadStartRecords(t *testing.T) {
	dir := startsDir(t)
	since := time.Now().Add(-time.Hour) // past the lease: only a live start keeps a token
	init := sleeper(t)
	good := string(mustJSON(NewStart("p-a", PhaseRunning, init.Process.Pid, "")))
	for name, body := range map[string]string{
		"p-a.start": good,
		"p-b.start": strings.Replace(good, `"p-a"`, `"p-b"`, 1)[:20],
		"p-c.start": good, // names another container
		"p-d.start": strings.Replace(strings.Replace(good, `"p-a"`, `"p-d"`, 1), PhaseRunning, "sleeping", 1),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	w := NewWatcher(dir, nil)
	defer w.Close()
	for c, want := range map[string]bool{"p-a": false, "p-b": true, "p-c": true, "p-d": true} {
		if _, g := w.Gone(c, since); g != want {
			t.Errorf("Gone(%s) = %v, want %v", c, g, want)
		}
	}
}

func TestProcStart(t *testing.T) {
	if ProcStart(os.Getpid()) == 0 {
		t.Fatal("no start time for this process")
	}
	if ProcStart(1<<22+7) != 0 {
		t.Fatal("a start time for no process")
	}
}

func FuzzParseStart(f *testing.F) {
	f.Add([]byte(`{"container":"p-t1","started":"2026-12-03T12:00:00.5Z","phase":"running","pid":42,"pid_start":123,"pidns":"pid:[4026531836]","id":"abc"}`))
	f.Add([]byte(`{"container":"p-t1","started":"2026-12-03T12:00:00Z","phase":"starting","pid":0}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseStart(data)
		if err != nil {
			return
		}
		if s.Container == "" || s.Started.IsZero() || s.PID <= 0 || (s.Phase != PhaseStarting && s.Phase != PhaseRunning) || strings.ContainsAny(s.Container, "/\x00") {
			t.Fatalf("accepted %+v from %q", s, data)
		}
	})
}

// BenchmarkGoneRunning is the lookup of a token bound to a running
// container: the cached records plus one poll(2) of the container
// process's pidfd.
func BenchmarkGoneRunning(b *testing.B) {
	dir := b.TempDir()
	for i := 0; i < 200; i++ {
		if err := Record(dir, End{Container: "p-t" + strings.Repeat("x", i%5) + string(rune('a'+i%26)), Reason: ReasonStopped, Ended: time.Now().Add(-time.Hour)}); err != nil {
			b.Fatal(err)
		}
	}
	init := sleeper(b)
	if err := Confirm(dir, NewStart("p-run", PhaseRunning, init.Process.Pid, "")); err != nil {
		b.Fatal(err)
	}
	w := NewWatcher(dir, nil)
	defer w.Close()
	w.now = func() time.Time { return time.Now().Add(time.Hour) }
	since := time.Now()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, g := w.Gone("p-run", since); g {
			b.Fatal("gone")
		}
	}
}

// BenchmarkConfirm is the write of a start record (the hook's createRuntime
// step, the runner's claim): lock, temporary file, rename.
func BenchmarkConfirm(b *testing.B) {
	dir := b.TempDir()
	st := NewStart("p-run", PhaseRunning, os.Getpid(), "")
	for i := 0; i < b.N; i++ {
		if err := Confirm(dir, st); err != nil {
			b.Fatal(err)
		}
	}
}
