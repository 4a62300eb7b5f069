package integration

import (
	"context"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"terok.dev/sandbox/common/names"
	"testing"
	"time"

	"terok.dev/sandbox/common/gatetokens"
	"terok.dev/sandbox/common/testkit"
	"terok.dev/sandbox/gate/internal/repogen"
)

// BenchmarkPushPolicy: sequential pushes of one new commit each to a new
// branch of a small mirror, with the push policy checked (a task token,
// the default policy) and without (the admin token, which the policy does
// not apply to), interleaved in one run; pushes/s of each and the ratio
// (docs/gate.md, Benchmarks). BENCH_ROUNDS sets the pushes per mode (30).
func BenchmarkPushPolicy(b *testing.B) {
	n := rounds(30)
	dir := b.TempDir()
	base := filepath.Join(dir, "gate")
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0",
		"GIT_AUTHOR_NAME=b", "GIT_AUTHOR_EMAIL=b@example.invalid", "GIT_COMMITTER_NAME=b", "GIT_COMMITTER_EMAIL=b@example.invalid"}
	git := func(d string, args ...string) string {
		cmd := exec.Command("git", args...)
		cmd.Dir, cmd.Env = d, env
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	work := filepath.Join(dir, "work")
	git(dir, "init", "-q", "-b", "main", work)
	for i := 0; i < 20; i++ {
		os.WriteFile(filepath.Join(work, fmt.Sprintf("f%d.txt", i)), []byte(strings.Repeat(fmt.Sprintf("line %d\n", i), 200)), 0o644)
	}
	git(work, "add", ".")
	git(work, "commit", "-q", "-m", "base")
	os.MkdirAll(base, 0o700)
	git(dir, "clone", "-q", "--bare", work, filepath.Join(base, "proj.git"))
	tokfile := filepath.Join(base, "tokens.json")
	tok, err := gatetokens.Open(tokfile, tokfile+".lock", nil).Create(names.TaskRef{Project: "proj", Task: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	port := testkit.FreePort(b)
	cmd := exec.Command(gateBin, "--base-path="+base, "--token-file="+tokfile, "--foreground", "--port="+strconv.Itoa(port))
	cmd.Env = append(env, "TEROK_GATE_ADMIN_TOKEN="+adminTok)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitPortB(b, port)
	// One new commit per push, made beforehand (one file changed).
	commits := make([]string, 2*n)
	for i := range commits {
		os.WriteFile(filepath.Join(work, "f0.txt"), []byte(fmt.Sprintf("change %d\n", i)), 0o644)
		git(work, "commit", "-q", "-am", "c"+strconv.Itoa(i))
		commits[i] = git(work, "rev-parse", "HEAD")
	}
	url := func(t string) string { return fmt.Sprintf("http://%s@127.0.0.1:%d/proj.git", t, port) }
	b.ResetTimer()
	for op := 0; op < b.N; op++ {
		var with, without []time.Duration
		for i := 0; i < n; i++ {
			for _, m := range []struct {
				tok string
				out *[]time.Duration
				c   string
			}{{tok, &with, commits[2*i]}, {adminTok, &without, commits[2*i+1]}} {
				ref := fmt.Sprintf("%s:refs/heads/b%d-%d-%s", m.c, op, i, m.tok[:10])
				start := time.Now()
				git(work, "push", "-q", url(m.tok), ref)
				*m.out = append(*m.out, time.Since(start))
			}
		}
		pw, po := 1/median(with).Seconds(), 1/median(without).Seconds()
		b.ReportMetric(pw, "pushes/s-policy")
		b.ReportMetric(po, "pushes/s-none")
		b.ReportMetric(pw/po, "ratio")
	}
}

// BenchmarkSmallClonesAudit: 8 clients x 8 clones of the small generated
// repository through a gate writing audit records and through one with
// --audit-file=off, interleaved rounds in one run; clones/s of each and
// the ratio (issue 13's goal >= 0.95; docs/gate.md, Benchmarks).
func BenchmarkSmallClonesAudit(b *testing.B) {
	repo, err := repogen.Cached(context.Background(), repogen.Small)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	base := filepath.Dir(repo)
	tokfile := filepath.Join(dir, "tokens.json")
	tok, err := gatetokens.Open(tokfile, tokfile+".lock", nil).Create(names.TaskRef{Project: strings.TrimSuffix(filepath.Base(repo), ".git"), Task: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	pids := map[int]int{}
	start := func(auditArg string) int {
		port := testkit.FreePort(b)
		cmd := exec.Command(gateBin, "--base-path="+base, "--token-file="+tokfile, "--foreground", "--port="+strconv.Itoa(port), auditArg)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		waitPortB(b, port)
		pids[port] = cmd.Process.Pid
		return port
	}
	// The gate process's own CPU per clone (its git children are not
	// counted; the small clones are mostly answered from the caches) does
	// not depend on the other load of the machine, unlike clones/s.
	cpu := map[int]float64{}
	auditFile := filepath.Join(dir, "audit", "gate.jsonl")
	on, off := start("--audit-file="+auditFile), start("--audit-file=off")
	name := filepath.Base(repo)
	const clients, perClient = 8, 8
	run := func(port int, tag string) float64 {
		url := fmt.Sprintf("http://%s@127.0.0.1:%d/%s", tok, port, name)
		var wg sync.WaitGroup
		errs := make(chan error, clients*perClient)
		c0 := procCPU(pids[port])
		defer func() { cpu[port] += procCPU(pids[port]) - c0 }()
		t0 := time.Now()
		for c := 0; c < clients; c++ {
			wg.Add(1)
			go func(c int) {
				defer wg.Done()
				for k := 0; k < perClient; k++ {
					if _, _, err := tryClone(nil, url, filepath.Join(dir, fmt.Sprintf("%s-%d-%d", tag, c, k))); err != nil {
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
		return float64(clients*perClient) / time.Since(t0).Seconds()
	}
	run(on, "warm-on")
	run(off, "warm-off")
	cpu[on], cpu[off] = 0, 0
	b.ResetTimer()
	var ons, offs []float64
	for i := 0; i < b.N; i++ {
		for r := 0; r < rounds(3); r++ {
			offs = append(offs, run(off, "off"))
			ons = append(ons, run(on, "on"))
		}
	}
	b.StopTimer()
	sort.Float64s(ons)
	sort.Float64s(offs)
	om, fm := ons[len(ons)/2], offs[len(offs)/2]
	b.ReportMetric(om, "clones/s-audit")
	b.ReportMetric(fm, "clones/s-off")
	b.ReportMetric(om/fm, "ratio")
	n := float64(len(ons) * clients * perClient)
	b.ReportMetric(cpu[on]/n*1000, "gate-ms-CPU/clone-audit")
	b.ReportMetric(cpu[off]/n*1000, "gate-ms-CPU/clone-off")
	recs, _ := os.ReadFile(auditFile)
	b.Logf("audit on %.1f clones/s, off %.1f clones/s, ratio %.3f; gate CPU per clone %.2f ms on, %.2f ms off; %d bytes of records",
		om, fm, om/fm, cpu[on]/n*1000, cpu[off]/n*1000, len(recs))
}

var noMarkers = strings.NewReplacer("A", ".", "g", ",")

// BenchmarkPushSecretScan: a whole repository pushed into an empty mirror
// through a gate with secret scanning (the default) and one with
// --secret-scan=false, interleaved; medians and the ratio (issue 14's goal
// <= 1.2). Two text repositories with packs of about 6 MB and 60 MB
// (docs/gate.md, Benchmarks).
func BenchmarkPushSecretScan(b *testing.B) {
	dir := b.TempDir()
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0",
		"GIT_AUTHOR_NAME=b", "GIT_AUTHOR_EMAIL=b@example.invalid", "GIT_COMMITTER_NAME=b", "GIT_COMMITTER_EMAIL=b@example.invalid"}
	git := func(d string, args ...string) {
		cmd := exec.Command("git", args...)
		cmd.Dir, cmd.Env = d, env
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	// Text repositories (binary blobs are not scanned, so repogen's mostly
	// random-binary Big would not measure the scan): files of 96 KiB of
	// random base64 lines, which compress to about 3/4 in the pack.
	rng := rand.New(rand.NewPCG(14, 14))
	textRepo := func(name string, files int) string {
		d := filepath.Join(dir, name)
		git(dir, "init", "-q", "-b", "main", d)
		raw := make([]byte, 72<<10)
		for i := 0; i < files; i++ {
			for j := range raw {
				raw[j] = byte(rng.Uint32())
			}
			// Random base64 holds provider-shaped strings by chance (AIza
			// + 35 characters once in ~17M positions): without "A" and "g"
			// no marker can match, and the scanner still reads every byte.
			enc := noMarkers.Replace(base64.StdEncoding.EncodeToString(raw))
			var sb strings.Builder
			for k := 0; k < len(enc); k += 76 {
				sb.WriteString(enc[k:min(k+76, len(enc))] + "\n")
			}
			os.WriteFile(filepath.Join(d, fmt.Sprintf("data%03d.txt", i)), []byte(sb.String()), 0o644)
		}
		git(d, "add", ".")
		git(d, "commit", "-q", "-m", "data")
		return d
	}
	small, large := textRepo("small", 85), textRepo("large", 850)
	base := filepath.Join(dir, "gate")
	os.MkdirAll(base, 0o700)
	tokfile := filepath.Join(base, "tokens.json")
	tok, err := gatetokens.Open(tokfile, tokfile+".lock", nil).Create(names.TaskRef{Project: "p", Task: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	start := func(arg string) int {
		port := testkit.FreePort(b)
		cmd := exec.Command(gateBin, "--base-path="+base, "--token-file="+tokfile, "--foreground", "--port="+strconv.Itoa(port), "--audit-file=off", arg)
		cmd.Env = env
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		waitPortB(b, port)
		return port
	}
	on, off := start("--secret-scan=true"), start("--secret-scan=false")
	push := func(port int, src string) time.Duration {
		mirror := filepath.Join(base, "p.git")
		os.RemoveAll(mirror)
		git(dir, "init", "-q", "--bare", mirror)
		t0 := time.Now()
		git(src, "push", "-q", fmt.Sprintf("http://%s@127.0.0.1:%d/p.git", tok, port), "refs/heads/main:refs/heads/task")
		return time.Since(t0)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, c := range []struct{ name, src string }{{"6MB", small}, {"60MB", large}} {
			var ons, offs []time.Duration
			for r := 0; r < rounds(3); r++ {
				offs = append(offs, push(off, c.src))
				ons = append(ons, push(on, c.src))
			}
			mo, mf := median(ons), median(offs)
			b.ReportMetric(mo.Seconds(), c.name+"-s-scan")
			b.ReportMetric(mf.Seconds(), c.name+"-s-off")
			b.ReportMetric(mo.Seconds()/mf.Seconds(), c.name+"-ratio")
		}
	}
}
