//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"terok.dev/sandbox/runner/internal/launch"
	"terok.dev/sandbox/runner/internal/podmaninfo"
	"terok.dev/sandbox/runner/internal/testharness"
)

// benchPairs is how many interleaved (terok-sandbox, podman) launch pairs
// one benchmark iteration times; medians damp the noise of a shared host.
const benchPairs = 12

// BenchmarkRunVsPodman measures `terok-sandbox run` against the identical
// bare `podman run -d` (same argument list, built by the launch package)
// and reports both medians and their ratio (target <= 1.05). Removal of the
// containers is not timed.
func BenchmarkRunVsPodman(b *testing.B) {
	for _, kind := range []string{"root", "rootless"} {
		b.Run(kind, func(b *testing.B) {
			env := H(b)
			var r *testharness.Runner
			if kind == "root" {
				r = env.Root(b)
			} else {
				r = env.Rootless(b)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
			defer cancel()
			mode := podmaninfo.Slirp4netns
			if r.User != nil {
				info := r.Podman(ctx, "info", "-f", "json")
				mode = podmaninfo.Parse([]byte(info.Stdout)).NetworkMode()
			}
			fw := podmaninfo.HostLoopbackArgs(mode)
			var sb, pm []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for j := 0; j < benchPairs; j++ {
					sName, pName := r.Name(fmt.Sprintf("bs-%d-%d", i, j)), r.Name(fmt.Sprintf("bp-%d-%d", i, j))
					podmanArgs := launch.Args(launch.Params{Rootless: r.User != nil, FirewallArgs: fw, Name: pName, Image: env.Image, Command: []string{"true"}})
					runSandbox := func() {
						start := time.Now()
						res := r.Sandbox(ctx, "run", "--shield-bypass", "--name", sName, "--image", env.Image, "--", "true")
						sb = append(sb, time.Since(start))
						if res.Code != 0 {
							b.Fatalf("terok-sandbox run: %s", res)
						}
						if !strings.Contains(res.Stdout, strings.Join(podmanArgs[:len(podmanArgs)-6], " ")) {
							b.Fatalf("sandbox ran different arguments than the baseline:\n%s\nvs %q", res.Stdout, podmanArgs)
						}
					}
					runPodman := func() {
						start := time.Now()
						res := r.Podman(ctx, podmanArgs...)
						pm = append(pm, time.Since(start))
						if res.Code != 0 {
							b.Fatalf("podman run: %s", res)
						}
					}
					if j%2 == 0 {
						runSandbox()
						runPodman()
					} else {
						runPodman()
						runSandbox()
					}
					b.StopTimer()
					r.Podman(ctx, "rm", "-f", "-t", "0", sName, pName)
					b.StartTimer()
				}
			}
			b.StopTimer()
			ms, mp := median(sb), median(pm)
			b.ReportMetric(float64(ms.Microseconds())/1000, "sandbox-ms")
			b.ReportMetric(float64(mp.Microseconds())/1000, "podman-ms")
			b.ReportMetric(float64(ms)/float64(mp), "ratio")
		})
	}
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// BenchmarkRunOverhead isolates the runner's own cost per launch: the real
// terok-sandbox binary with a podman stand-in that answers at once, against
// running the stand-in directly. The difference (overhead-ms) is what
// terok-sandbox adds to any real launch, without the noise of podman itself.
func BenchmarkRunOverhead(b *testing.B) {
	env := H(b)
	r := env.Root(b)
	dir := filepath.Join(r.Base, "fakebin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	stand := filepath.Join(dir, "podman")
	if err := os.WriteFile(stand, []byte("#!/bin/sh\necho 0123456789ab\n"), 0o755); err != nil {
		b.Fatal(err)
	}
	r.ExtraEnv = append(r.ExtraEnv, "PATH="+dir+":/usr/sbin:/usr/bin:/sbin:/bin")
	ctx := context.Background()
	var sb, pm []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := 0; j < 20; j++ {
			start := time.Now()
			if res := r.Sandbox(ctx, "run", "--shield-bypass", "--name", "x", "--image", "i", "--", "true"); res.Code != 0 {
				b.Fatalf("terok-sandbox run: %s", res)
			}
			sb = append(sb, time.Since(start))
			start = time.Now()
			if res := r.Run(ctx, stand, "run", "-d", "--name", "x", "i", "true"); res.Code != 0 {
				b.Fatalf("stand-in: %s", res)
			}
			pm = append(pm, time.Since(start))
		}
	}
	b.StopTimer()
	b.ReportMetric(float64((median(sb)-median(pm)).Microseconds())/1000, "overhead-ms")
}
