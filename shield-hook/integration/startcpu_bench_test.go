package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"terok.dev/sandbox/common/shieldbundle"
)

// BenchmarkHookStartCPU is the CPU a shielded start of a `true` container
// costs in this module's processes (docs/shield.md, Performance): the
// createRuntime hook, the resolver it forks (its whole life: start-up,
// then the exit when the container's init ends) and poststop, each from
// the kernel's accounting (getrusage of the reaped process, user + system,
// all threads), so other load on the machine hardly moves it, unlike wall
// time. Every iteration is a new container: a new init in the container
// netns, no table, a resolver bundle with the runner's annotations
// (refused-traffic records and the task-ends directory on).
func BenchmarkHookStartCPU(b *testing.B) {
	tp := newTopo(b)
	dir := stateDir(b)
	writeBundleTB(b, dir)
	ends := filepath.Join(filepath.Dir(dir), "task-ends")
	// The resolver outlives the hook; as the subreaper of its orphans this
	// process reaps it and reads its rusage.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) }()
	// An A/B of two builds, interleaved in time: TEROK_HOOK_BIN_B names a
	// second hook binary (its base name must be terok-shield-hook), whose
	// figures are reported with the prefix b- and the ratio of the totals.
	bins := []string{hookBin}
	if other := os.Getenv("TEROK_HOOK_BIN_B"); other != "" {
		bins = append(bins, other)
	}
	sums := make([]startCPU, len(bins))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j, bin := range bins {
			sums[j].add(launchCPU(b, tp, bin, dir, ends))
		}
	}
	b.StopTimer()
	n := float64(b.N)
	for j := range bins {
		p := ""
		if j > 0 {
			p = "b-"
		}
		s := sums[j]
		b.ReportMetric(s.hook/n, p+"hook-cpu-ms/op")
		b.ReportMetric(s.resolver/n, p+"resolver-cpu-ms/op")
		b.ReportMetric(s.poststop/n, p+"poststop-cpu-ms/op")
		b.ReportMetric(s.total()/n, p+"total-cpu-ms/op")
		b.ReportMetric(s.wall/n, p+"hook-wall-ms/op")
	}
	if len(bins) > 1 {
		b.ReportMetric(sums[1].total()/sums[0].total(), "b/a-cpu-ratio")
	}
}

// startCPU is the CPU (ms, user + system) of one launch's processes of
// this module, and the hook's wall time.
type startCPU struct{ hook, resolver, poststop, wall float64 }

func (s *startCPU) add(o startCPU) {
	s.hook += o.hook
	s.resolver += o.resolver
	s.poststop += o.poststop
	s.wall += o.wall
}

func (s startCPU) total() float64 { return s.hook + s.resolver + s.poststop }

func rusageMs(u, s syscall.Timeval) float64 {
	return float64((time.Duration(u.Nano()) + time.Duration(s.Nano())).Microseconds()) / 1000
}

// launchCPU is one new container's start and end with the hook binary
// bin: a new init in the container netns, a namespace without the table,
// createRuntime, the resolver's start report, the init's end (which ends
// the resolver, as with a `true` container), poststop.
func launchCPU(b *testing.B, tp *topo, bin, dir, ends string) startCPU {
	b.StopTimer()
	_ = exec.Command("nsenter", "-n", "-t", fmt.Sprint(tp.pid), "nft", "delete", "table", "inet", "terok_shield").Run()
	initCmd := exec.Command("ip", "netns", "exec", tp.ctr, "sleep", "600")
	if err := initCmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = initCmd.Process.Kill(); _ = initCmd.Wait() }()
	waitNetns(b, initCmd.Process.Pid, tp.ctr)
	state := benchState(initCmd.Process.Pid, dir, ends)
	var r startCPU
	run := func(stage string) *os.ProcessState {
		cmd := exec.Command(bin, stage)
		cmd.Env = []string{}
		cmd.Stdin = strings.NewReader(string(state))
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%s %s: %v %s", bin, stage, err, out)
		}
		return cmd.ProcessState
	}
	b.StartTimer()
	start := time.Now()
	ps := run("createRuntime")
	r.wall = float64(time.Since(start).Microseconds()) / 1000
	b.StopTimer()
	ru := ps.SysUsage().(*syscall.Rusage)
	r.hook = rusageMs(ru.Utime, ru.Stime)
	rpid, err := shieldbundle.ReadPIDFile(filepath.Join(dir, shieldbundle.FileResolverPID))
	if err != nil {
		b.Fatal(err)
	}
	waitReady(b, dir)
	_ = initCmd.Process.Kill()
	_ = initCmd.Wait()
	var rru syscall.Rusage
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(rpid, &ws, 0, &rru); err != nil {
		b.Fatalf("reap resolver %d: %v", rpid, err)
	}
	r.resolver = rusageMs(rru.Utime, rru.Stime)
	b.StartTimer()
	ps = run("poststop")
	b.StopTimer()
	ru = ps.SysUsage().(*syscall.Rusage)
	r.poststop = rusageMs(ru.Utime, ru.Stime)
	b.StartTimer()
	return r
}

// benchState is the OCI state podman hands the hook for a launch by
// terok-sandbox: the runner's annotations, audit and task ends on.
func benchState(pid int, dir, ends string) []byte {
	st := string(ociState(pid, dir, resolverVer))
	extra := fmt.Sprintf(`"%s":"bench-ctr","%s":"true","%s":"benchproj","%s":"benchtask","%s":%q,`,
		shieldbundle.AnnName, shieldbundle.AnnAuditEnabled, shieldbundle.AnnProject, shieldbundle.AnnTask, shieldbundle.AnnTaskEnds, ends)
	return []byte(strings.Replace(st, `"annotations":{`, `"annotations":{`+extra, 1))
}

// waitReady waits for the resolver's start report and fails on anything
// but "ok".
func waitReady(b *testing.B, dir string) {
	b.Helper()
	for i := 0; i < 400; i++ {
		data, err := os.ReadFile(filepath.Join(dir, shieldbundle.FileResolverReady))
		if err == nil {
			if strings.TrimSpace(string(data)) != "ok" {
				b.Fatalf("resolver.ready: %q", data)
			}
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.Fatal("no resolver.ready after 2 s")
}
