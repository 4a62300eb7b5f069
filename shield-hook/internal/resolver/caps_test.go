package resolver

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// capLine is the named line of a /proc status file ("" if missing).
func capLine(path, name string) string {
	b, _ := os.ReadFile(path)
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == name {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// TestNarrowForkThread: the calling thread's bounding set keeps
// CAP_NET_ADMIN alone, a child it execs as root has nothing else
// permitted or effective, nothing inheritable or ambient, and
// no_new_privs, and the other threads of the process keep theirs.
func TestNarrowForkThread(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_SETPCAP to drop from the bounding set)")
	}
	const netAdmin = "0000000000001000"
	full := capLine("/proc/self/status", "CapBnd")
	nnp := capLine("/proc/self/status", "NoNewPrivs")
	if full == netAdmin {
		t.Skip("this process already runs with CAP_NET_ADMIN alone")
	}
	type result struct {
		bnd, childPrm, childEff, childInh, childAmb, childNNP string
		err                                                   error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread is discarded
		NarrowForkThread()
		var r result
		r.bnd = capLine("/proc/thread-self/status", "CapBnd")
		cmd := exec.Command("sleep", "5")
		if r.err = cmd.Start(); r.err == nil {
			status := "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/status"
			for i := 0; i < 500 && capLine(status, "Name") != "sleep"; i++ {
				_ = unix.Nanosleep(&unix.Timespec{Nsec: 2e6}, nil)
			}
			r.childPrm = capLine(status, "CapPrm")
			r.childEff = capLine(status, "CapEff")
			r.childInh = capLine(status, "CapInh")
			r.childAmb = capLine(status, "CapAmb")
			r.childNNP = capLine(status, "NoNewPrivs")
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		done <- r
	}()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.bnd != netAdmin || r.childPrm != netAdmin || r.childEff != netAdmin {
		t.Fatalf("narrowed thread CapBnd %s, its child CapPrm %s CapEff %s; want %s", r.bnd, r.childPrm, r.childEff, netAdmin)
	}
	if r.childInh != "0000000000000000" || r.childAmb != "0000000000000000" || r.childNNP != "1" {
		t.Fatalf("child CapInh %s CapAmb %s NoNewPrivs %s; want none, none, 1", r.childInh, r.childAmb, r.childNNP)
	}
	if got := capLine("/proc/thread-self/status", "CapBnd"); got != full {
		t.Fatalf("another thread's bounding set changed: %s, was %s", got, full)
	}
	if got := capLine("/proc/thread-self/status", "NoNewPrivs"); got != nnp {
		t.Fatalf("another thread's no_new_privs changed: %s, was %s", got, nnp)
	}
}

// TestDropPrivilegesEveryThread: a resolver started without a narrowed
// forking thread (all capabilities, no no_new_privs) still ends with
// CAP_NET_ADMIN alone on every thread, including threads made before the
// drop: dropPrivileges skips a step only when the thread already has its
// result. Runs in a child process, since the drop cannot be undone: this
// package's tests built again with CGO_ENABLED=0, as the hook is
// (syscall.AllThreadsSyscall refuses to run in a cgo binary).
func TestDropPrivilegesEveryThread(t *testing.T) {
	if os.Getenv("TEROK_TEST_DROP_CHILD") == "1" {
		// Threads that exist before the drop, each parked on its own.
		release := make(chan struct{})
		for i := 0; i < 4; i++ {
			go func() { runtime.LockOSThread(); <-release; runtime.UnlockOSThread() }()
		}
		if err := dropPrivileges(); err != nil {
			t.Fatal(err)
		}
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range tasks {
			status := "/proc/self/task/" + task.Name() + "/status"
			for _, k := range []string{"CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb", "NoNewPrivs"} {
				os.Stdout.WriteString("thread " + task.Name() + " " + k + " " + capLine(status, k) + "\n")
			}
		}
		close(release)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (capabilities to drop)")
	}
	// The child inherits this thread's credentials (another test may
	// have narrowed the process's first thread, which Go never discards).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if capLine("/proc/thread-self/status", "CapBnd") == "0000000000001000" || capLine("/proc/thread-self/status", "NoNewPrivs") == "1" {
		t.Skip("this thread already runs narrowed")
	}
	bin := filepath.Join(t.TempDir(), "resolver.test")
	build := exec.Command("go", "test", "-c", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the test binary without cgo: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-test.run=^TestDropPrivilegesEveryThread$", "-test.count=1")
	cmd.Env = append(os.Environ(), "TEROK_TEST_DROP_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := map[string]string{"CapEff": "0000000000001000", "CapPrm": "0000000000001000", "CapBnd": "0000000000001000",
		"CapInh": "0000000000000000", "CapAmb": "0000000000000000", "NoNewPrivs": "1"}
	threads := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) != 4 || f[0] != "thread" {
			continue
		}
		threads[f[1]] = true
		if want[f[2]] != f[3] {
			t.Errorf("thread %s: %s = %s, want %s", f[1], f[2], f[3], want[f[2]])
		}
	}
	if len(threads) < 2 {
		t.Fatalf("saw %d threads in the child, want several:\n%s", len(threads), out)
	}
}
