package integration

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"terok.dev/sandbox/common/testkit"
	"terok.dev/sandbox/common/testkit/scrape"
)

// TestMetrics runs real git through the gate started with --metrics-listen
// and reads the counts back with expfmt: requests by kind, outcome and
// reason, bytes, latency, token lookups, git processes and open
// connections (docs/gate.md, Metrics). No token is in the exposition.
func TestMetrics(t *testing.T) {
	f := newFixture(t)
	mport := testkit.FreePort(t)
	g := f.startGate([]string{"--metrics-listen=127.0.0.1:" + strconv.Itoa(mport)})
	dst := filepath.Join(f.dir, "clone")
	f.git("", "-c", "protocol.version=2", "clone", "-q", g.url(f.tokProj, "proj.git"), dst)
	if err := os.WriteFile(filepath.Join(dst, "m.txt"), []byte("m"), 0o644); err != nil {
		t.Fatal(err)
	}
	f.git(dst, "add", ".")
	f.git(dst, "commit", "-q", "-m", "m")
	f.git(dst, "push", "-q", "origin", "HEAD:refs/heads/task-1")
	if _, err := f.tryGit("", "ls-remote", g.url(f.tokProj, "other.git")); err == nil {
		t.Fatal("other project listed")
	}
	if _, err := f.tryGit("", "ls-remote", g.url("terok-g-00000000000000000000000000000000", "proj.git")); err == nil {
		t.Fatal("unknown token listed")
	}
	// A connection held open while the gate is scraped.
	held, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(g.port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()

	var fams scrape.Families
	var text string
	// The server sees the held connection once it accepted it.
	for deadline := time.Now().Add(10 * time.Second); ; {
		fams, text = scrape.Port(t, mport)
		if fams.Value("terok_gate_open_connections", map[string]string{}) >= 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if strings.Contains(text, f.tokProj) || strings.Contains(text, "terok-g-0000") {
		t.Fatal("a token is in the exposition")
	}
	req := func(kind, outcome, reason string) float64 {
		return fams.Value("terok_gate_requests_total", map[string]string{"kind": kind, "outcome": outcome, "reason": reason})
	}
	for _, c := range []struct {
		kind, outcome, reason string
		min                   float64
	}{
		{"clone", "ok", "", 1},
		{"ls-refs", "ok", "", 1},
		{"push", "ok", "", 1},
		{"ls-refs", "refused", "wrong-project", 1},
		{"ls-refs", "refused", "unknown-token", 1},
		{"ls-refs", "refused", "no-credentials", 1}, // git's first, credential-less request
	} {
		if got := req(c.kind, c.outcome, c.reason); got < c.min {
			t.Errorf("requests{kind=%s,outcome=%s,reason=%s} = %v, want >= %v", c.kind, c.outcome, c.reason, got, c.min)
		}
	}
	if got := fams.Value("terok_gate_token_lookups_total", map[string]string{"result": "unknown"}); got != 1 {
		t.Errorf("unknown lookups = %v, want 1", got)
	}
	if got := fams.Value("terok_gate_token_lookups_total", map[string]string{"result": "found"}); got < 4 {
		t.Errorf("found lookups = %v, want >= 4 (clone, push, wrong project)", got)
	}
	if got := fams.Value("terok_gate_response_bytes_total", map[string]string{"kind": "clone"}); got < 200 {
		t.Errorf("clone response bytes = %v, want a pack", got)
	}
	if got := fams.Value("terok_gate_request_bytes_total", map[string]string{"kind": "push"}); got < 100 {
		t.Errorf("push request bytes = %v, want the pushed pack", got)
	}
	if got := fams.Value("terok_gate_request_duration_seconds", map[string]string{"kind": "clone", "outcome": "ok"}); got < 1 {
		t.Errorf("clone latency observations = %v", got)
	}
	if got := fams.Value("terok_gate_git_processes", map[string]string{}); got != 0 {
		t.Errorf("git processes after the operations = %v, want 0", got)
	}
	if got := fams.Value("terok_gate_open_connections", map[string]string{}); got < 1 {
		t.Errorf("open connections with one held = %v, want >= 1", got)
	}
	if got := fams.Value("process_resident_memory_bytes", map[string]string{}); got <= 0 {
		t.Errorf("process_resident_memory_bytes = %v", got)
	}
}

// TestMetricsListenRefused: a non-loopback address, a name, port 0 and
// --inetd (one process per connection) are usage errors with an example.
func TestMetricsListenRefused(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct{ args []string }{
		{[]string{"--foreground", "--metrics-listen=0.0.0.0:9464"}},
		{[]string{"--foreground", "--metrics-listen=localhost:9464"}},
		{[]string{"--foreground", "--metrics-listen=127.0.0.1:0"}},
		{[]string{"--inetd", "--metrics-listen=127.0.0.1:9464"}},
	} {
		cmd := exec.Command(gateBin, append([]string{"--base-path=" + f.base, "--token-file=" + f.tokfile}, c.args...)...)
		out, err := cmd.CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 2 {
			t.Errorf("%v: %v, want exit 2\n%s", c.args, err, out)
			continue
		}
		if !strings.Contains(string(out), "--metrics-listen") {
			t.Errorf("%v: message does not name the flag: %s", c.args, out)
		}
	}
}
