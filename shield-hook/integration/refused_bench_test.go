package integration

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"terok.dev/sandbox/common/shieldbundle"
)

// cpuNanos is the CPU time every thread of pid has used (schedstat).
func cpuNanos(b *testing.B, pid int) int64 {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		b.Fatal(err)
	}
	var n int64
	for _, task := range tasks {
		s, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, task.Name()))
		if err != nil {
			continue // a thread that ended
		}
		if f := strings.Fields(string(s)); len(f) > 0 {
			v, _ := strconv.ParseInt(f[0], 10, 64)
			n += v
		}
	}
	return n
}

// rssKiB is the resident set of pid (VmRSS).
func rssKiB(b *testing.B, pid int) int {
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(s), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return 0
}

// floodOne sends n UDP datagrams to one destination from one socket.
func (tp *topo) floodOne(b *testing.B, host string, n int) {
	err := tp.ctrNS.Do(func() error {
		c, err := net.Dial("udp", net.JoinHostPort(host, "20000"))
		if err != nil {
			return err
		}
		defer c.Close()
		for i := 0; i < n; i++ {
			_, _ = c.Write([]byte("x"))
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRefusedReader measures what the NFLOG reader costs the host:
// the resolver's CPU time (every thread, schedstat) per 10,000 refused
// packets, to one destination (all counted in one record a second) and to
// 10,000 destinations (the limiter's worst case), and the resolver's idle
// resident set with the reader and without it (audit off). CPU is what the
// resolver used from the first packet until its records settled, so it
// includes writing the records.
func BenchmarkRefusedReader(b *testing.B) {
	start := func(b *testing.B, audit bool) (*topo, string, int) {
		tp := newTopo(b)
		startBenchUpstream(b, tp)
		dir := stateDir(b)
		writeBundleTB(b, dir)
		st, _ := json.Marshal(map[string]any{
			"ociVersion": "1.0.2", "id": "0123456789abcdef0123", "status": "created", "pid": tp.pid, "bundle": "/nonexistent",
			"annotations": map[string]string{
				shieldbundle.AnnStateDir: dir, shieldbundle.AnnVersion: resolverVer,
				shieldbundle.AnnName: "bench", shieldbundle.AnnAuditEnabled: strconv.FormatBool(audit),
			},
		})
		if r := runHookTB(b, "createRuntime", st); r.code != 0 {
			b.Fatalf("hook: %+v", r)
		}
		b.Cleanup(func() { _ = runHookTB(b, "poststop", st) })
		pid, ok := shieldbundle.ResolverPID(dir)
		if !ok {
			b.Fatal("no resolver")
		}
		return tp, dir, pid
	}
	b.Run("idle-rss", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			_, _, on := start(b, true)
			_, _, off := start(b, false)
			time.Sleep(500 * time.Millisecond)
			b.ReportMetric(float64(rssKiB(b, on)), "KiB-with-reader")
			b.ReportMetric(float64(rssKiB(b, off)), "KiB-without")
		}
	})
	for _, mode := range []string{"one-destination", "distinct-destinations"} {
		b.Run(mode, func(b *testing.B) {
			tp, dir, pid := start(b, true)
			var total int64
			for i := 0; i < b.N; i++ {
				before := cpuNanos(b, pid)
				if mode == "one-destination" {
					tp.floodOne(b, otherV4, 10000)
				} else {
					tp.floodUDP(b, otherV4, 10000)
				}
				// Let the counts reach the file: two ticks of the
				// one-a-second records.
				time.Sleep(2200 * time.Millisecond)
				total += cpuNanos(b, pid) - before
			}
			b.ReportMetric(float64(total)/float64(b.N)/1e6, "cpu-ms/10k-packets")
			b.ReportMetric(float64(refusedBytes(dir)), "log-bytes")
		})
	}
}

// BenchmarkRefusedRecordLatency measures the time from a refused
// connection attempt (a new destination each time, so its record is due at
// once) until its record is in refused.jsonl: the kernel's NFLOG batching
// (at most 50 ms), the reader, the writer goroutine and the write. The
// file is polled every millisecond.
func BenchmarkRefusedRecordLatency(b *testing.B) {
	tp := newTopo(b)
	startBenchUpstream(b, tp)
	dir := stateDir(b)
	writeBundleTB(b, dir)
	st := ociState(tp.pid, dir, resolverVer)
	if r := runHookTB(b, "createRuntime", st); r.code != 0 {
		b.Fatalf("hook: %+v", r)
	}
	b.Cleanup(func() { _ = runHookTB(b, "poststop", st) })
	path := filepath.Join(dir, "refused.jsonl")
	var total time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		want := fmt.Sprintf(`"dport":%d,`, 30000+i%30000)
		start := time.Now()
		_ = tp.tcp(otherV4, 30000+i%30000)
		for {
			data, _ := os.ReadFile(path)
			if strings.Contains(string(data), want) {
				break
			}
			if time.Since(start) > 10*time.Second {
				b.Fatalf("no record with %s", want)
			}
			time.Sleep(time.Millisecond)
		}
		total += time.Since(start)
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1000, "ms-to-record")
}
