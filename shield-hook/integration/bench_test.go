package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/shield-hook/internal/hook"
	"terok.dev/sandbox/shield-hook/internal/testaddrs"
)

func benchSetup(b *testing.B, n int) (*topo, string, []byte) {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	tp := newTopo(b)
	dir := filepath.Join(b.TempDir(), "shield")
	if err := os.Mkdir(dir, 0o700); err != nil {
		b.Fatal(err)
	}
	s := ruleset.Script{
		Options:  ruleset.Options{DNS: ruleset.SlirpDNS, LoopbackPorts: []int{9418, 18731, 18732}},
		Allow:    testaddrs.Allowlist(n),
		Gateways: ruleset.SlirpGateways(),
	}
	text, skipped, err := s.Render()
	if err != nil || len(skipped) > 0 {
		b.Fatal(err, skipped)
	}
	if err := os.WriteFile(filepath.Join(dir, shieldbundle.FileRuleset), []byte(text), 0o600); err != nil {
		b.Fatal(err)
	}
	return tp, dir, []byte(text)
}

// BenchmarkHook1000 is the full createRuntime hook (real binary): parse
// state, validate, discover gateways, apply 1,000 allowlist entries in one
// transaction, list and verify, write the state files.
func BenchmarkHook1000(b *testing.B) {
	tp, dir, _ := benchSetup(b, 1000)
	state := ociState(tp.pid, dir, curVer())
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cmd := exec.Command(hookBin, "createRuntime")
		cmd.Stdin = bytes.NewReader(state)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%v %s", err, out)
		}
	}
}

// BenchmarkNsenterNft1000 is the baseline the issue names: the same
// transaction (table replace + ruleset + gateway elements) applied with
// `nsenter -n -t PID nft -f -`, with no validation or verification.
func BenchmarkNsenterNft1000(b *testing.B) {
	tp, _, text := benchSetup(b, 1000)
	script := hook.Transaction(text, []string{gwV4, gwV6})
	pid := strconv.Itoa(tp.pid)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cmd := exec.Command("nsenter", "-n", "-t", pid, "nft", "-f", "-")
		cmd.Stdin = bytes.NewReader(script)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%v %s", err, out)
		}
	}
}

// BenchmarkVerifyListing1000 isolates the hook's extra step over the
// baseline: `nft -t list table` in the netns plus ruleset.VerifyHook.
func BenchmarkVerifyListing1000(b *testing.B) {
	tp, dir, _ := benchSetup(b, 1000)
	cmd := exec.Command(hookBin, "createRuntime")
	cmd.Stdin = bytes.NewReader(ociState(tp.pid, dir, curVer()))
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("%v %s", err, out)
	}
	pid := strconv.Itoa(tp.pid)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		out, err := exec.Command("nsenter", "-n", "-t", pid, "nft", "-t", "list", "table", "inet", "terok_shield").Output()
		if err != nil {
			b.Fatal(err)
		}
		if errs := ruleset.VerifyHook(string(out), false); len(errs) > 0 {
			b.Fatal(errs)
		}
	}
}

// BenchmarkHookVsNsenter1000 alternates the two within one loop so that
// load from other processes hits both alike, and reports the ratio. In
// "replace" both find the previous iteration's table and replace it (a
// restart in the same namespace); in "fresh" the table is deleted, untimed,
// before each of them, as for a new container.
func BenchmarkHookVsNsenter1000(b *testing.B) {
	for _, fresh := range []bool{false, true} {
		name := "replace"
		if fresh {
			name = "fresh"
		}
		b.Run(name, func(b *testing.B) {
			tp, dir, text := benchSetup(b, 1000)
			state := ociState(tp.pid, dir, curVer())
			script := hook.Transaction(text, []string{gwV4, gwV6})
			pid := strconv.Itoa(tp.pid)
			clear := func() {
				if fresh {
					b.StopTimer()
					_ = exec.Command("nsenter", "-n", "-t", pid, "nft", "delete", "table", "inet", "terok_shield").Run()
					b.StartTimer()
				}
			}
			var hookNs, baseNs int64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				clear()
				start := time.Now()
				cmd := exec.Command(hookBin, "createRuntime")
				cmd.Stdin = bytes.NewReader(state)
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("%v %s", err, out)
				}
				hookNs += time.Since(start).Nanoseconds()
				clear()
				start = time.Now()
				cmd = exec.Command("nsenter", "-n", "-t", pid, "nft", "-f", "-")
				cmd.Stdin = bytes.NewReader(script)
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("%v %s", err, out)
				}
				baseNs += time.Since(start).Nanoseconds()
			}
			b.ReportMetric(float64(hookNs)/float64(b.N)/1e6, "hook-ms/op")
			b.ReportMetric(float64(baseNs)/float64(b.N)/1e6, "nsenter-nft-ms/op")
			b.ReportMetric(float64(hookNs)/float64(baseNs), "ratio")
		})
	}
}

// BenchmarkHookStages runs the real hook with hook.TimingEnv set and
// reports the mean time of each step it prints (ms/op per step) in a
// namespace without a leftover table (a new container), for the
// dev-standard shape (dnsmasq tier, no allowlist entries, no dnsmasq
// start) and for a 1,000-entry allowlist.
func BenchmarkHookStages(b *testing.B) {
	for _, bc := range []struct {
		n       int
		dnsmasq bool
	}{{0, false}, {0, true}, {1000, false}} {
		b.Run(fmt.Sprintf("entries=%d/dnsmasq=%v", bc.n, bc.dnsmasq), func(b *testing.B) {
			tp, dir, _ := benchSetup(b, bc.n)
			state := ociState(tp.pid, dir, curVer())
			if bc.dnsmasq {
				if _, err := exec.LookPath("dnsmasq"); err != nil {
					b.Skip("dnsmasq not installed")
				}
				conf, err := shieldbundle.DnsmasqConf(ruleset.SlirpDNS, dir, []string{"allowed.shield.test"}, os.Getpid(), nil)
				if err != nil {
					b.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, shieldbundle.FileDnsmasqConf), conf, 0o600); err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() {
					cmd := exec.Command(hookBin, "poststop")
					cmd.Stdin = bytes.NewReader(state)
					_ = cmd.Run()
				})
			}
			sums := map[string]float64{}
			var order []string
			pid := strconv.Itoa(tp.pid)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				// Each run sees a namespace without the table, as a new
				// container does (the hook's own timings are reported).
				b.StopTimer()
				_ = exec.Command("nsenter", "-n", "-t", pid, "nft", "delete", "table", "inet", "terok_shield").Run()
				if bc.dnsmasq {
					stop := exec.Command(hookBin, "poststop")
					stop.Stdin = bytes.NewReader(state)
					_ = stop.Run()
				}
				b.StartTimer()
				cmd := exec.Command(hookBin, "createRuntime")
				cmd.Env = append(os.Environ(), hook.TimingEnv+"=1")
				cmd.Stdin = bytes.NewReader(state)
				var se bytes.Buffer
				cmd.Stderr = &se
				if err := cmd.Run(); err != nil {
					b.Fatalf("%v %s", err, se.String())
				}
				for _, f := range strings.Fields(se.String()) {
					k, v, ok := strings.Cut(f, "=")
					if !ok || !strings.HasSuffix(v, "ms") {
						continue
					}
					ms, err := strconv.ParseFloat(strings.TrimSuffix(v, "ms"), 64)
					if err != nil {
						continue
					}
					if _, seen := sums[k]; !seen {
						order = append(order, k)
					}
					sums[k] += ms
				}
			}
			for _, k := range order {
				b.ReportMetric(sums[k]/float64(b.N), k+"-ms/op")
			}
		})
	}
}
