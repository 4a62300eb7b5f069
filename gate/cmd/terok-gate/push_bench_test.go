package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"terok.dev/sandbox/common/gatetokens"
	"terok.dev/sandbox/common/testkit"
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
	tok, err := gatetokens.Open(tokfile, tokfile+".lock", nil).Create("proj", "bench")
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
