package integration

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"terok.dev/sandbox/common/testkit"
	"terok.dev/sandbox/common/testkit/scrape"
)

// TestMetrics: the real agent with --metrics-listen, a real ssh-keygen
// signature through the bridge, a refused key and an unknown token, read
// back with expfmt (docs/ssh-agent.md, Metrics). No token in the exposition.
func TestMetrics(t *testing.T) {
	f := newFixture(t)
	mport := testkit.FreePort(t)
	agentP, port := f.startAgent(t, "--audit-file", "off", "--metrics-listen", "127.0.0.1:"+strconv.Itoa(mport))
	_, sockA := f.startBridge(t, f.tokA, port)
	envA := []string{"SSH_AUTH_SOCK=" + sockA}
	msg := filepath.Join(t.TempDir(), "message")
	if err := os.WriteFile(msg, []byte("metrics\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, envA, "ssh-keygen", "-Y", "sign", "-f", f.mainA.Public, "-n", "file", msg); err != nil {
		t.Fatalf("ssh-keygen -Y sign: %v\n%s\n%s", err, out, agentP.log)
	}
	if _, err := dialUnix(t, sockA).Sign(f.mainB.Signer.PublicKey(), []byte("x")); err == nil {
		t.Fatal("signed with project b's key")
	}
	_, sockX := f.startBridge(t, "terok-p-ffffffffffffffffffffffffffffffff", port)
	if out, err := run(t, []string{"SSH_AUTH_SOCK=" + sockX}, "ssh-add", "-L"); err == nil {
		t.Fatalf("unknown token listed keys: %s", out)
	}
	held := dialUnix(t, sockA) // a session open while scraped
	if _, err := held.List(); err != nil {
		t.Fatal(err)
	}

	fams, text := scrape.Port(t, mport)
	if strings.Contains(text, f.tokA) || strings.Contains(text, "terok-p-ffff") {
		t.Fatal("a token is in the exposition")
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		min    float64
	}{
		{"terok_agent_signatures_total", map[string]string{"outcome": "ok", "reason": ""}, 1},
		{"terok_agent_signatures_total", map[string]string{"outcome": "refused", "reason": "no-key"}, 1},
		{"terok_agent_refusals_total", map[string]string{"reason": "no-key"}, 1},
		{"terok_agent_refusals_total", map[string]string{"reason": "unknown-token"}, 1},
		{"terok_agent_token_lookups_total", map[string]string{"result": "unknown"}, 1},
		{"terok_agent_token_lookups_total", map[string]string{"result": "found"}, 2},
		{"terok_agent_sign_duration_seconds", map[string]string{"outcome": "ok"}, 1},
		{"terok_agent_open_connections", map[string]string{}, 1},
		{"process_resident_memory_bytes", map[string]string{}, 1},
	} {
		if got := fams.Value(c.name, c.labels); got < c.min {
			t.Errorf("%s%v = %v, want >= %v", c.name, c.labels, got, c.min)
		}
	}
	if got := fams.Value("terok_agent_signatures_total", map[string]string{"outcome": "ok", "reason": ""}); got != 1 {
		t.Errorf("ok signatures = %v, want exactly 1", got)
	}
}
