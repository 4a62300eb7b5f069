package resolver

import (
	"os"
	"os/exec"
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

// TestNarrowThreadBoundingSet: the calling thread's bounding set keeps
// CAP_NET_ADMIN alone, a child it execs as root has nothing else
// permitted, and the other threads of the process keep theirs.
func TestNarrowThreadBoundingSet(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_SETPCAP to drop from the bounding set)")
	}
	const netAdmin = "0000000000001000"
	full := capLine("/proc/self/status", "CapBnd")
	if full == netAdmin {
		t.Skip("this process already runs with CAP_NET_ADMIN alone")
	}
	type result struct {
		bnd, childPrm, childEff string
		err                     error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread is discarded
		NarrowThreadBoundingSet()
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
	if got := capLine("/proc/thread-self/status", "CapBnd"); got != full {
		t.Fatalf("another thread's bounding set changed: %s, was %s", got, full)
	}
}
