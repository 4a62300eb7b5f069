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
			name := func(side string, i, j int) string { return r.Name(fmt.Sprintf("b%s-%d-%d", side, i, j)) }
			timeInterleaved(b, benchPairs, "sandbox",
				func(i, j int) {
					res := r.Sandbox(ctx, "run", "--shield-bypass", "--name", name("s", i, j), "--image", env.Image, "--", "true")
					podmanArgs := launch.Args(launch.Params{Rootless: r.User != nil, FirewallArgs: fw, Name: name("p", i, j), Image: env.Image, Command: []string{"true"}})
					if res.Code != 0 {
						b.Fatalf("terok-sandbox run: %s", res)
					}
					if !strings.Contains(res.Stdout, strings.Join(podmanArgs[:len(podmanArgs)-6], " ")) {
						b.Fatalf("sandbox ran different arguments than the baseline:\n%s\nvs %q", res.Stdout, podmanArgs)
					}
				},
				func(i, j int) {
					podmanArgs := launch.Args(launch.Params{Rootless: r.User != nil, FirewallArgs: fw, Name: name("p", i, j), Image: env.Image, Command: []string{"true"}})
					if res := r.Podman(ctx, podmanArgs...); res.Code != 0 {
						b.Fatalf("podman run: %s", res)
					}
				},
				func(i, j int) { r.Podman(ctx, "rm", "-f", "-t", "0", name("s", i, j), name("p", i, j)) })
		})
	}
}

// timeInterleaved times pairs launch pairs per iteration: candidate against
// baseline, alternating which goes first so that drift on a shared host hits
// both alike, with cleanup untimed after each pair. It reports both medians
// and their ratio (candidate / baseline).
func timeInterleaved(b *testing.B, pairs int, candidateName string, candidate, baseline, cleanup func(i, j int)) {
	var cand, base []time.Duration
	timed := func(f func(i, j int), i, j int, into *[]time.Duration) {
		start := time.Now()
		f(i, j)
		*into = append(*into, time.Since(start))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := 0; j < pairs; j++ {
			if j%2 == 0 {
				timed(candidate, i, j, &cand)
				timed(baseline, i, j, &base)
			} else {
				timed(baseline, i, j, &base)
				timed(candidate, i, j, &cand)
			}
			b.StopTimer()
			cleanup(i, j)
			b.StartTimer()
		}
	}
	b.StopTimer()
	mc, mb := median(cand), median(base)
	b.ReportMetric(float64(mc.Microseconds())/1000, candidateName+"-ms")
	b.ReportMetric(float64(mb.Microseconds())/1000, "podman-ms")
	b.ReportMetric(float64(mc)/float64(mb), "ratio")
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

// BenchmarkShieldRunLongVsPodman is BenchmarkShieldRunVsPodman with a
// container that keeps running (`sleep 60`), the case of real task
// containers: the post-start verification then really lists the shield
// table in the container's netns (with `true` the process is usually gone
// and there is nothing left to list). Same pairs, medians and ratio.
func BenchmarkShieldRunLongVsPodman(b *testing.B) { benchShieldStart(b, "shl", "sleep", "60") }
