package shield

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"terok.dev/sandbox/common/shieldbundle"
)

// TestEarlyVerification runs the early post-start check against a real
// network namespace (a process in it stands in for the container's init,
// real nsenter and nft list its table) with a run root of the test's own,
// and plays the hook (container.id) and the OCI runtime (pidfile) by hand.
// The early result may only ever replace a passing VerifyStarted: every
// other case must end in the full check and its error.
func TestEarlyVerification(t *testing.T) {
	const (
		idA = "0123456789ab0123456789ab0123456789ab0123456789ab0123456789abcdef"
		idB = "fedcba987654fedcba987654fedcba987654fedcba987654fedcba9876543210"
	)
	for _, tt := range []struct {
		name string
		// table: apply the hook ruleset ("hook"), the bypass one
		// ("bypass") or nothing ("").
		table string
		// staleID is a container.id left by an earlier container.
		staleID string
		// hookID is what the hook writes ("" = the hook never ran).
		hookID string
		// otherPID makes the pidfile name another process after the early
		// check (a reused or wrong PID).
		otherPID bool
		podmanID string
		early    bool   // the early check must have proved its part
		wantErr  string // "" = success
	}{
		{name: "hook ran and table in place", table: "hook", hookID: idA, podmanID: idA, early: true},
		{name: "relaunch over a stale container.id", table: "hook", staleID: idB[:12], hookID: idA, podmanID: idA, early: true},
		{name: "no table in the netns", hookID: idA, podmanID: idA, wantErr: "without the shield table"},
		{name: "bypass ruleset in the netns", table: "bypass", hookID: idA, podmanID: idA, wantErr: "verification failed"},
		{name: "podman started another container", table: "hook", hookID: idA, podmanID: idB, wantErr: "names container " + idA[:12]},
		{name: "hook never ran and a stale container.id", table: "hook", staleID: idB[:12], podmanID: idA, wantErr: "names container " + idB[:12]},
		{name: "pidfile names another process", table: "hook", hookID: idA, otherPID: true, podmanID: idA, early: true, wantErr: "without the shield table"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			ns := newLiveNetns(t)
			e := newPrestartEnv(t, true)
			fakeBin(t, e.tools.Path, "podman", readFile(t, filepath.Join(ns.bin, "podman")))
			for _, tool := range []string{"nft", "nsenter"} {
				p, _ := exec.LookPath(tool)
				if err := os.Symlink(p, filepath.Join(e.tools.Path, tool)); err != nil {
					t.Fatal(err)
				}
			}
			s := e.shield(0, infoSlirp, true)
			s.opts.RunRoot = t.TempDir()
			if _, err := s.PreStart(ctx, "c1", nil); err != nil {
				t.Fatal(err)
			}
			dir, _ := filepath.EvalSymlinks(e.stateDir)
			switch tt.table {
			case "hook", "bypass":
				ns.nft(t, "-f", filepath.Join(dir, "ruleset.nft"))
			}
			if tt.table == "hook" {
				// The hook started the resolver, which reported its start.
				startFakeResolver(t, dir, false)
			}
			if err := shieldbundle.WriteResolverReady(dir, shieldbundle.ResolverReadyOK); err != nil {
				t.Fatal(err)
			}
			if tt.table == "bypass" {
				startFakeResolver(t, dir, false) // down tells it to open DNS
				if err := s.Down(ctx, "c1", false); err != nil {
					t.Fatal(err)
				}
			}
			if tt.staleID != "" {
				writeAtomic(t, filepath.Join(dir, "container.id"), tt.staleID+"\n")
			}

			p := s.BeginVerify(ctx, "c1")
			defer p.Stop()
			// podman creates the run directory, the hook writes
			// container.id, the runtime writes the pidfile.
			userdata := filepath.Join(s.opts.RunRoot, "overlay-containers", tt.podmanID, "userdata")
			if err := os.MkdirAll(userdata, 0o700); err != nil {
				t.Fatal(err)
			}
			if tt.hookID != "" {
				writeAtomic(t, filepath.Join(dir, "container.id"), tt.hookID[:12]+"\n")
			}
			writeAtomic(t, filepath.Join(userdata, "pidfile"), strconv.Itoa(ns.pid))
			if tt.hookID != "" && tt.hookID == tt.podmanID {
				select {
				case <-p.done:
				case <-time.After(10 * time.Second):
					t.Fatal("early check did not end")
				}
			}
			if tt.otherPID {
				writeAtomic(t, filepath.Join(userdata, "pidfile"), strconv.Itoa(os.Getpid()))
			}
			err := p.Finish(ctx, tt.podmanID)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("Finish: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Finish: %v, want %q", err, tt.wantErr)
			}
			if tt.early && p.res == nil {
				t.Fatal("the early check proved nothing")
			}
			if tt.table != "hook" && p.res != nil {
				t.Fatalf("early check passed without the hook's table: %+v", p.res)
			}
			// The inotify descriptor is closed off the launch's path, but
			// it is closed.
			waitReleased(t, p)
		})
	}
}

// TestEarlyVerificationStop: a launch that fails ends the watch at once.
func TestEarlyVerificationStop(t *testing.T) {
	e := newPrestartEnv(t, true)
	s := e.shield(0, infoSlirp, true)
	s.opts.RunRoot = t.TempDir()
	if err := os.MkdirAll(e.stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	p := s.BeginVerify(context.Background(), "c1")
	stopped := make(chan struct{})
	go func() { p.Stop(); p.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("Stop did not end the watch")
	}
	if p.res != nil {
		t.Fatal("result without a container")
	}
	waitReleased(t, p)
}

// waitReleased fails unless the watcher's inotify descriptor gets closed.
func waitReleased(t *testing.T, p *Pending) {
	t.Helper()
	released := make(chan struct{})
	go func() { p.Wait(); close(released) }()
	select {
	case <-released:
	case <-time.After(10 * time.Second):
		t.Fatal("the watcher's inotify descriptor was never closed")
	}
}

func TestProcStart(t *testing.T) {
	if procStart(os.Getpid()) == "" {
		t.Fatal("no start time for this process")
	}
	if procStart(0) != "" {
		t.Fatal("start time for pid 0")
	}
}

func writeAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestRunInNetns: the command runs in the target netns, and no thread of
// ours stays there (the main thread included: /proc/self/ns/net is the
// thread-group leader's).
func TestRunInNetns(t *testing.T) {
	ns := newLiveNetns(t)
	want, err := os.Readlink("/proc/" + strconv.Itoa(ns.pid) + "/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	self, _ := os.Readlink("/proc/self/ns/net")
	for i := 0; i < 50; i++ {
		res, err := Tools{}.RunInNetns(context.Background(), 10*time.Second, ns.pid, "readlink", "/proc/self/ns/net")
		if err != nil || res.Code != 0 || strings.TrimSpace(res.Stdout) != want {
			t.Fatalf("run %d: %+v %v, want %s", i, res, err, want)
		}
		if now, _ := os.Readlink("/proc/self/ns/net"); now != self {
			t.Fatalf("run %d left the main thread in %s (was %s)", i, now, self)
		}
	}
	if _, err := (Tools{}).RunInNetns(context.Background(), time.Second, 0, "true"); err == nil {
		t.Fatal("pid 0 accepted")
	}
}

// TestEarlyVerificationRootless: rootless never watches (runc init's
// namespaces are closed to the user until exec); Finish is VerifyStarted.
func TestEarlyVerificationRootless(t *testing.T) {
	e := newPrestartEnv(t, true)
	s := e.shield(1000, infoSlirp, true)
	if err := os.MkdirAll(e.stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	p := s.BeginVerify(context.Background(), "c1")
	select {
	case <-p.done:
	default:
		t.Fatal("rootless started a watcher")
	}
	if err := p.Finish(context.Background(), "0123456789ab0123456789ab0123456789ab0123456789ab0123456789abcdef"); err == nil || !strings.Contains(err.Error(), "hook did not run") {
		t.Fatalf("Finish without container.id: %v", err)
	}
}

// waitDoneOrExit: whichever comes first, the listing's end or the
// process's end, decides; an ended process never makes Finish wait.
func TestWaitDoneOrExit(t *testing.T) {
	start := func(t *testing.T, arg string) *exec.Cmd {
		t.Helper()
		cmd := exec.Command("sleep", arg)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	t.Run("process already ended", func(t *testing.T) {
		cmd := start(t, "0")
		_ = cmd.Wait() // reaped: the PID names nothing
		if waitDoneOrExit(cmd.Process.Pid, make(chan struct{})) {
			t.Fatal("waited for the listing of an ended process")
		}
	})
	t.Run("zombie", func(t *testing.T) {
		cmd := start(t, "0")
		for processAlive(cmd.Process.Pid) {
			time.Sleep(5 * time.Millisecond)
		}
		if waitDoneOrExit(cmd.Process.Pid, make(chan struct{})) {
			t.Fatal("waited for the listing of a zombie")
		}
	})
	t.Run("listing ends first", func(t *testing.T) {
		cmd := start(t, "60")
		done := make(chan struct{})
		close(done)
		if !waitDoneOrExit(cmd.Process.Pid, done) {
			t.Fatal("reported an exit for a running process")
		}
	})
	t.Run("process ends first", func(t *testing.T) {
		cmd := start(t, "60")
		go func() { _ = cmd.Process.Kill() }()
		if waitDoneOrExit(cmd.Process.Pid, make(chan struct{})) {
			t.Fatal("the listing never ended, yet it was reported done")
		}
	})
}

// TestEventsName: the watch looks at a file again only for an event that
// may concern it; anything it cannot rule out counts as a hit.
func TestEventsName(t *testing.T) {
	ev := func(wd int32, mask uint32, name string) []byte {
		n := 0
		if name != "" {
			n = (len(name)/16 + 1) * 16 // the kernel pads names with NULs
		}
		b := make([]byte, unix.SizeofInotifyEvent+n)
		binary.NativeEndian.PutUint32(b[0:4], uint32(wd))
		binary.NativeEndian.PutUint32(b[4:8], mask)
		binary.NativeEndian.PutUint32(b[12:16], uint32(n))
		copy(b[unix.SizeofInotifyEvent:], name)
		return b
	}
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	for _, tt := range []struct {
		name  string
		batch []byte
		want  bool
	}{
		{"the file, renamed into place", ev(1, unix.IN_MOVED_TO, "container.id"), true},
		{"the file, written", ev(1, unix.IN_CLOSE_WRITE, "container.id"), true},
		{"other files only", cat(ev(1, unix.IN_CREATE, "ruleset.nft.tmp"), ev(1, unix.IN_MOVED_TO, "gateway")), false},
		{"the file after others in one batch", cat(ev(1, unix.IN_CREATE, "gateway"), ev(1, unix.IN_MOVED_TO, "container.id")), true},
		{"the name in another watched directory", ev(2, unix.IN_MOVED_TO, "container.id"), false},
		{"a longer name with the file as prefix", ev(1, unix.IN_MOVED_TO, "container.id.tmp"), false},
		{"queue overflow", ev(-1, unix.IN_Q_OVERFLOW, ""), true},
		{"truncated header", ev(1, unix.IN_CREATE, "gateway")[:8], true},
		{"name longer than the batch", ev(1, unix.IN_CREATE, "gateway")[:unix.SizeofInotifyEvent+4], true},
		{"empty batch", nil, false},
	} {
		if got := eventsName(tt.batch, 1, "container.id"); got != tt.want {
			t.Errorf("%s: eventsName = %v, want %v", tt.name, got, tt.want)
		}
	}
}
