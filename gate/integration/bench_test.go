package integration

// Benchmarks of issue 3 (run by `make bench`; docs/gate.md has figures):
//
//   BenchmarkCloneBig: full clone of a generated repository (>= 10k files,
//   >= 50 MB pack) through terok-gate, through `git daemon` and as a local
//   `--no-local` clone, interleaved rounds, medians reported; target
//   gate/daemon <= 1.05.
//   BenchmarkSmallClones8: 8 concurrent clients cloning a small repository;
//   clones/s through the gate and through git daemon (target ratio >= 1.0)
//   and the gate's peak RSS.
//
// Each benchmark op is a complete comparison; BENCH_ROUNDS (default 5 for
// the big clone) sets the rounds per op.

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"terok.dev/sandbox/common/names"
	"testing"
	"time"

	"terok.dev/sandbox/common/gatetokens"
	"terok.dev/sandbox/common/testkit"
	"terok.dev/sandbox/gate/internal/repogen"
)

type benchEnv struct {
	b         *testing.B
	dir       string
	base      string
	tok       string
	gatePort  int
	gatePID   int
	daemon    int
	daemonPID int
	// CPU accounting groups of the two paths (nil without cgroup v1
	// cpuacct write access): server and clients of each path are charged
	// to its group, so CPU per clone is measured independent of other load.
	gateCG, daemonCG             *cpuGroup // servers and their git processes
	gateClientCG, daemonClientCG *cpuGroup // the cloning clients
}

// cpuGroup is a cgroup-v1 cpuacct group.
type cpuGroup struct{ dir string }

func newCPUGroup(b *testing.B, name string) *cpuGroup {
	dir := filepath.Join("/sys/fs/cgroup/cpuacct", fmt.Sprintf("terok-bench-%s-%d-%d", name, os.Getpid(), time.Now().UnixNano()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil
	}
	b.Cleanup(func() {
		// Killed processes leave the group once reaped; retry briefly.
		for i := 0; i < 50 && os.Remove(dir) != nil; i++ {
			time.Sleep(20 * time.Millisecond)
		}
	})
	return &cpuGroup{dir: dir}
}

// usage is the group's CPU time in seconds.
func (g *cpuGroup) usage() float64 {
	if g == nil {
		return 0
	}
	data, err := os.ReadFile(filepath.Join(g.dir, "cpuacct.usage"))
	if err != nil {
		return 0
	}
	ns, _ := strconv.ParseFloat(strings.TrimSpace(string(data)), 64)
	return ns / 1e9
}

// argv runs args inside the group (the process joins it before exec, so
// every child is charged too).
func (g *cpuGroup) argv(args ...string) []string {
	if g == nil {
		return args
	}
	return append([]string{"/bin/sh", "-c", `echo $$ > "$0/cgroup.procs" && exec "$@"`, g.dir}, args...)
}

// setupBench starts a gate and a git daemon over the cache directory that
// holds repo, with a token for repo's project.
func setupBench(b *testing.B, repo string) *benchEnv {
	b.Helper()
	dir := b.TempDir()
	e := &benchEnv{b: b, dir: dir, base: filepath.Dir(repo)}
	tokfile := filepath.Join(dir, "tokens.json")
	tok, err := gatetokens.Open(tokfile, tokfile+".lock", nil).Create(names.TaskRef{Project: strings.TrimSuffix(filepath.Base(repo), ".git"), Task: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	e.tok = tok
	e.gateCG, e.daemonCG = newCPUGroup(b, "gate"), newCPUGroup(b, "daemon")
	e.gateClientCG, e.daemonClientCG = newCPUGroup(b, "gate-client"), newCPUGroup(b, "daemon-client")
	start := func(args ...string) *exec.Cmd {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
		// Own process group: `git daemon` runs git-daemon as a child, which
		// must go too.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
		return cmd
	}
	e.gatePort = testkit.FreePort(b)
	// The audit records go to the benchmark's own directory, not beside
	// the shared repository cache.
	g := start(e.gateCG.argv(gateBin, "--base-path="+e.base, "--token-file="+tokfile, "--foreground", "--port="+strconv.Itoa(e.gatePort),
		"--audit-file="+filepath.Join(dir, "audit", "gate.jsonl"))...)
	e.gatePID = g.Process.Pid
	e.daemon = testkit.FreePort(b)
	d := start(e.daemonCG.argv("git", "daemon", "--reuseaddr", "--export-all", "--listen=127.0.0.1",
		"--port="+strconv.Itoa(e.daemon), "--base-path="+e.base, e.base)...)
	e.daemonPID = d.Process.Pid
	waitPortB(b, e.gatePort)
	waitPortB(b, e.daemon)
	return e
}

func waitPortB(b *testing.B, port int) {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Fatalf("port %d never opened", port)
}

func cloneOnce(b *testing.B, g *cpuGroup, url, dst string, extra ...string) time.Duration {
	b.Helper()
	d, _, err := tryClone(g, url, dst, extra...)
	if err != nil {
		b.Fatal(err)
	}
	return d
}

// cloneCPU clones once and returns the wall time and the CPU seconds the
// server process itself spent (its git children are not included: git
// daemon reaps its per-connection children too late for a fair sum).
func cloneCPU(b *testing.B, g *cpuGroup, serverPID int, url, dst string, extra ...string) (time.Duration, float64) {
	b.Helper()
	before := procCPU(serverPID)
	d, _, err := tryClone(g, url, dst, extra...)
	if err != nil {
		b.Fatal(err)
	}
	return d, procCPU(serverPID) - before
}

// tryClone clones without checkout and removes the result; safe in goroutines.
func tryClone(g *cpuGroup, url, dst string, extra ...string) (time.Duration, float64, error) {
	args := append([]string{"git", "clone", "-q", "--no-checkout"}, extra...)
	args = g.argv(append(args, url, dst)...)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + filepath.Dir(dst), "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0"}
	start := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(start)
	os.RemoveAll(dst)
	if err != nil {
		return d, 0, fmt.Errorf("git clone %s: %v\n%s", url, err, out)
	}
	cpu := 0.0
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		cpu = float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
	}
	return d, cpu, nil
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func rounds(def int) int {
	if v, err := strconv.Atoi(os.Getenv("BENCH_ROUNDS")); err == nil && v > 0 {
		return v
	}
	return def
}

func BenchmarkCloneBig(b *testing.B) {
	repo, err := repogen.Cached(context.Background(), repogen.Big)
	if err != nil {
		b.Fatal(err)
	}
	e := setupBench(b, repo)
	name := filepath.Base(repo)
	gateURL := fmt.Sprintf("http://%s@127.0.0.1:%d/%s", e.tok, e.gatePort, name)
	daemonURL := fmt.Sprintf("git://127.0.0.1:%d/%s", e.daemon, name)
	n := rounds(5)
	// Warm the page cache once so the first measured round is not an outlier.
	cloneOnce(b, nil, daemonURL, filepath.Join(e.dir, "warm"))
	b.ResetTimer()
	var g, d, l []time.Duration
	var gc []float64
	cpu0 := e.cpuSnapshot()
	for i := 0; i < b.N; i++ {
		for r := 0; r < n; r++ {
			d = append(d, cloneOnce(b, e.daemonClientCG, daemonURL, filepath.Join(e.dir, "d")))
			gw, gcpu := cloneCPU(b, e.gateClientCG, e.gatePID, gateURL, filepath.Join(e.dir, "g"))
			g, gc = append(g, gw), append(gc, gcpu)
			l = append(l, cloneOnce(b, nil, repo, filepath.Join(e.dir, "l"), "--no-local"))
		}
	}
	b.StopTimer()
	reportCPU(b, e, float64(len(g)), cpu0)
	gm, dm, lm := median(g), median(d), median(l)
	sort.Float64s(gc)
	b.ReportMetric(gc[len(gc)/2], "gate-process-cpu-s")
	b.ReportMetric(gm.Seconds(), "gate-s")
	b.ReportMetric(dm.Seconds(), "daemon-s")
	b.ReportMetric(lm.Seconds(), "local-s")
	b.ReportMetric(gm.Seconds()/dm.Seconds(), "gate/daemon")
	b.Logf("big clone medians over %d rounds: gate %v, git daemon %v, local --no-local %v, gate/daemon %.3f (target <= 1.05); gate process CPU %.3fs",
		len(g), gm, dm, lm, gm.Seconds()/dm.Seconds(), gc[len(gc)/2])
}

// procCPU is the CPU time pid itself used (utime + stime), in seconds.
func procCPU(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	var ticks float64
	for _, i := range []int{11, 12} { // fields 14 and 15 of stat(5)
		v, _ := strconv.ParseFloat(f[i], 64)
		ticks += v
	}
	return ticks / 100 // USER_HZ
}

// cpuSnapshot reads the four groups: gate server, gate clients, daemon
// server, daemon clients.
func (e *benchEnv) cpuSnapshot() [4]float64 {
	return [4]float64{e.gateCG.usage(), e.gateClientCG.usage(), e.daemonCG.usage(), e.daemonClientCG.usage()}
}

// reportCPU reports CPU milliseconds per clone of the servers (with their
// git processes) and of the clients, for both paths.
func reportCPU(b *testing.B, e *benchEnv, clones float64, before [4]float64) {
	if e.gateCG == nil || e.gateClientCG == nil || e.daemonCG == nil || e.daemonClientCG == nil || clones == 0 {
		b.Log("CPU per clone not measured (needs write access to /sys/fs/cgroup/cpuacct)")
		return
	}
	now := e.cpuSnapshot()
	ms := func(i int) float64 { return (now[i] - before[i]) / clones * 1000 }
	b.ReportMetric(ms(0), "gate-server-cpu-ms/clone")
	b.ReportMetric(ms(2), "daemon-server-cpu-ms/clone")
	b.ReportMetric(ms(1), "http-client-cpu-ms/clone")
	b.ReportMetric(ms(3), "git-client-cpu-ms/clone")
	b.Logf("CPU per clone: servers (with their git processes) gate %.1f ms vs git daemon %.1f ms (ratio %.3f); clients http %.1f ms vs git:// %.1f ms",
		ms(0), ms(2), ms(0)/ms(2), ms(1), ms(3))
}

// peakRSS is VmHWM of pid in KiB.
func peakRSS(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			v, _ := strconv.Atoi(f[1])
			return v
		}
	}
	return -1
}

func BenchmarkSmallClones8(b *testing.B) {
	repo, err := repogen.Cached(context.Background(), repogen.Small)
	if err != nil {
		b.Fatal(err)
	}
	e := setupBench(b, repo)
	name := filepath.Base(repo)
	gateURL := fmt.Sprintf("http://%s@127.0.0.1:%d/%s", e.tok, e.gatePort, name)
	daemonURL := fmt.Sprintf("git://127.0.0.1:%d/%s", e.daemon, name)
	const clients, perClient = 8, 8
	run := func(cg *cpuGroup, url, tag string) float64 {
		var wg sync.WaitGroup
		errs := make(chan error, clients*perClient)
		start := time.Now()
		for c := 0; c < clients; c++ {
			wg.Add(1)
			go func(c int) {
				defer wg.Done()
				for k := 0; k < perClient; k++ {
					if _, _, err := tryClone(cg, url, filepath.Join(e.dir, fmt.Sprintf("%s-%d-%d", tag, c, k))); err != nil {
						errs <- err
					}
				}
			}(c)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Error(err)
		}
		return float64(clients*perClient) / time.Since(start).Seconds()
	}
	run(nil, daemonURL, "warm")
	b.ResetTimer()
	var gs, ds []float64
	cpu0 := e.cpuSnapshot()
	for i := 0; i < b.N; i++ {
		for r := 0; r < rounds(3); r++ {
			ds = append(ds, run(e.daemonClientCG, daemonURL, "d"))
			gs = append(gs, run(e.gateClientCG, gateURL, "g"))
		}
	}
	b.StopTimer()
	reportCPU(b, e, float64(len(gs)*clients*perClient), cpu0)
	sort.Float64s(gs)
	sort.Float64s(ds)
	gm, dm := gs[len(gs)/2], ds[len(ds)/2]
	rss := peakRSS(e.gatePID)
	b.ReportMetric(gm, "gate-clones/s")
	b.ReportMetric(dm, "daemon-clones/s")
	b.ReportMetric(gm/dm, "gate/daemon")
	b.ReportMetric(float64(rss), "gate-peak-RSS-KiB")
	b.Logf("8 concurrent clients: gate %.1f clones/s, git daemon %.1f clones/s, ratio %.3f (target >= 1.0); gate peak RSS %d KiB",
		gm, dm, gm/dm, rss)
}
