package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
)

// BenchmarkInteractiveResolver compares a resolver started in
// interactive mode (holding the NFQUEUE queue and the decider socket) with
// one in enforce mode: idle resident set and the time from the createRuntime hook's start
// to the resolver's ready report.
func BenchmarkInteractiveResolver(b *testing.B) {
	start := func(b *testing.B, mode string) (int, time.Duration) {
		tp := newTopo(b)
		startBenchUpstream(b, tp)
		dir := stateDir(b)
		writeBundleTB(b, dir)
		if mode == shieldbundle.ModeInteractive {
			// The hook verifies the ruleset the bundle's mode asks for.
			text, _, err := ruleset.Script{Options: ruleset.Options{DNS: dnsV4, LoopbackPorts: []int{svcPort}, Interactive: true}}.Render()
			if err != nil {
				b.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, shieldbundle.FileRuleset), []byte(text), 0o600); err != nil {
				b.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, shieldbundle.FileMode), []byte(mode+"\n"), 0o600); err != nil {
			b.Fatal(err)
		}
		st, _ := json.Marshal(map[string]any{
			"ociVersion": "1.0.2", "id": "0123456789abcdef0123", "status": "created", "pid": tp.pid, "bundle": "/nonexistent",
			"annotations": map[string]string{
				shieldbundle.AnnStateDir: dir, shieldbundle.AnnVersion: resolverVer,
				shieldbundle.AnnName: "bench", shieldbundle.AnnAuditEnabled: strconv.FormatBool(true),
			},
		})
		t0 := time.Now()
		if r := runHookTB(b, "createRuntime", st); r.code != 0 {
			b.Fatalf("hook: %+v", r)
		}
		// The hook does not wait for the resolver: the start ends with its
		// report in resolver.ready, as the runner's verification waits.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			line, err := shieldbundle.ReadResolverReady(dir)
			if err != nil {
				b.Fatal(err)
			}
			if line == shieldbundle.ResolverReadyOK {
				break
			}
			if line != "" || time.Now().After(deadline) {
				b.Fatalf("resolver.ready: %q", line)
			}
		}
		took := time.Since(t0)
		b.Cleanup(func() { _ = runHookTB(b, "poststop", st) })
		pid, ok := shieldbundle.ResolverPID(dir)
		if !ok {
			b.Fatal("no resolver")
		}
		if mode == shieldbundle.ModeInteractive {
			if _, err := os.Stat(filepath.Join(dir, shieldbundle.FileDeciderSocket)); err != nil {
				b.Fatalf("interactive resolver without its decider socket: %v", err)
			}
		}
		return pid, took
	}
	var onStart, offStart time.Duration
	for i := 0; i < b.N; i++ {
		// Alternate which starts first: on a loaded machine the order
		// shows in the times.
		var on, off int
		var tOn, tOff time.Duration
		if i%2 == 0 {
			on, tOn = start(b, shieldbundle.ModeInteractive)
			off, tOff = start(b, shieldbundle.ModeEnforce)
		} else {
			off, tOff = start(b, shieldbundle.ModeEnforce)
			on, tOn = start(b, shieldbundle.ModeInteractive)
		}
		onStart += tOn
		offStart += tOff
		time.Sleep(500 * time.Millisecond)
		b.ReportMetric(float64(rssKiB(b, on)), "KiB-interactive")
		b.ReportMetric(float64(rssKiB(b, off)), "KiB-enforce")
	}
	b.ReportMetric(float64(onStart.Microseconds())/float64(b.N)/1e3, "start-ms-interactive")
	b.ReportMetric(float64(offStart.Microseconds())/float64(b.N)/1e3, "start-ms-enforce")
}
