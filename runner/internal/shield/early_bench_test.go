package shield

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkEarlyWatch is the early verification's wait for a launch, up to
// the listing: while it watches, the hook writes its files into the state
// directory and container.id (atomically, as it does), then the runtime
// writes a few files and its pidfile into the container's run directory.
// Per op: one watch from BeginVerify to the pidfile seen, the writes
// included (the same for every build). The listing itself is left out
// (no nft here: it fails at once).
func BenchmarkEarlyWatch(b *testing.B) {
	stateDir := filepath.Join(b.TempDir(), "task", "shield")
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		b.Fatal(err)
	}
	runRoot := b.TempDir()
	log, _ := testLog()
	s := New(Config{StateDir: stateDir}, Options{Tools: Tools{Path: b.TempDir()}, EUID: 0, Log: log, Info: &infoSlirp,
		HostAddrs: func() []string { return nil }})
	s.opts.RunRoot = runRoot
	write := func(path, content string) {
		if err := os.WriteFile(path+".tmp", []byte(content), 0o600); err != nil {
			b.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			b.Fatal(err)
		}
	}
	// Other containers in the run root, as on a busy host.
	for i := 0; i < 20; i++ {
		if err := os.MkdirAll(filepath.Join(runRoot, "overlay-containers", fmt.Sprintf("%064x", 1<<40+i), "userdata"), 0o700); err != nil {
			b.Fatal(err)
		}
	}
	ctx := context.Background()
	var cpu time.Duration
	b.ResetTimer()
	c0 := selfCPU()
	for i := 0; i < b.N; i++ {
		id := fmt.Sprintf("%012x", i+1) + strings.Repeat("0", 52)
		userdata := filepath.Join(runRoot, "overlay-containers", id, "userdata")
		if err := os.MkdirAll(userdata, 0o700); err != nil {
			b.Fatal(err)
		}
		p := s.BeginVerify(ctx, "c1")
		for j := 0; j < 12; j++ {
			write(filepath.Join(stateDir, "hookfile"+strconv.Itoa(j)), "x\n")
		}
		write(filepath.Join(stateDir, "container.id"), id[:12]+"\n")
		for j := 0; j < 4; j++ {
			write(filepath.Join(userdata, "runtimefile"+strconv.Itoa(j)), "x\n")
		}
		write(filepath.Join(userdata, "pidfile"), strconv.Itoa(os.Getpid()))
		select {
		case <-p.listing:
		case <-p.done:
			b.Fatal("the watch ended before the pidfile")
		}
		b.StopTimer()
		cpu += selfCPU() - c0
		p.Wait() // the inotify close waits for an RCU grace period
		_ = os.RemoveAll(filepath.Dir(userdata))
		c0 = selfCPU()
		b.StartTimer()
	}
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
}

// selfCPU is the CPU time this process has used (all threads).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
