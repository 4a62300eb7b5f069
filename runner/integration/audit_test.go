package integration

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/common/testkit"
)

// TestAuditFollowBinary runs the real terok-sandbox audit --follow: it
// prints the history (the documented daemon records of demo/t1,
// docs/audit.md, Examples), then records as they land across a rotation,
// and ends with status 0 on SIGINT.
func TestAuditFollowBinary(t *testing.T) {
	dir := t.TempDir()
	vars := testkit.RootVars(dir)
	vars["PATH"], vars["HOME"] = os.Getenv("PATH"), dir
	cfg := config.Defaults(testkit.Env(vars, os.Geteuid(), dir))
	history, files := 0, map[string]string{}
	for _, l := range testkit.DocExamples(t, filepath.Join("..", "..", "docs", "audit.md"), 1) {
		r, err := audit.ParseLine([]byte(l))
		if err != nil {
			t.Fatalf("documented example %s: %v", l, err)
		}
		if r.Channel == "shield" || r.Project != "demo" || r.Task != "t1" {
			continue // a shield record counts only with its container's task dir
		}
		files[cfg.AuditFile(r.Channel)] += l + "\n"
		history++
	}
	if history < 3 {
		t.Fatalf("docs/audit.md has only %d daemon examples of demo/t1", history)
	}
	for p, data := range files {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	bin := filepath.Join(dir, "terok-sandbox")
	if out, err := exec.Command("go", "build", "-o", bin, "terok.dev/sandbox/runner/cmd/terok-sandbox").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "audit", "t1", "--project", "demo", "--follow", "--json")
	cmd.Env = testkit.Environ(vars)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func() audit.Record {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("output ended; stderr %s", stderr.String())
			}
			r, err := audit.ParseLine([]byte(l))
			if err != nil {
				t.Fatalf("line %q: %v", l, err)
			}
			return r
		case <-time.After(60 * time.Second): // hang guard only
			t.Fatalf("no record; stderr %s", stderr.String())
		}
		return audit.Record{}
	}
	for i := 0; i < history; i++ {
		next()
	}
	w, err := audit.Open(cfg.AuditFile("proxy"), audit.Options{MaxBytes: 300, Keep: 20})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 6; i++ {
		if err := w.Write(audit.Record{Channel: "proxy", Event: "request", Outcome: "ok", Project: "demo", Task: "t1",
			Fields: map[string]any{"seq": i, "upstream_host": "api.example.com"}}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 6; i++ {
		r := next()
		if n, _ := r.Fields["seq"].(float64); int(n) != i {
			t.Fatalf("live record %d: %+v", i, r)
		}
	}
	if _, err := os.Stat(cfg.AuditFile("proxy") + ".1"); err != nil {
		t.Fatalf("no rotation happened: %v", err)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	for range lines {
	}
	_, _ = io.Copy(io.Discard, stdout)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("after SIGINT: %v; stderr %s", err, stderr.String())
	}
}
