//go:build e2e

package e2e

// One real task across all four channels (issue 13, Tests): a container
// launched with `terok-sandbox run`, shield on, clones and pushes through
// the gate, calls an upstream through the credential proxy (once more after
// its token is revoked), signs through the SSH agent with real ssh to an
// sshd the test starts, and tries a destination the shield refuses; then
// `terok-sandbox audit TASK --json` is the whole story in time order
// (docs/audit.md, The audit command), and no secret is in any file the
// run wrote or in any daemon's log.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/common/testkit"
	"terok.dev/sandbox/runner/internal/testharness"
)

// TestAuditTimelineAllChannels runs the task rootful and rootless.
func TestAuditTimelineAllChannels(t *testing.T) {
	env := H(t)
	// Two addresses of a test host outside: sshd on the first (listed in
	// the shield profile), a TCP server on the second (not listed).
	out, _, addrs := shxNewNetnsHost(t, 2)
	sshHost, refusedHost := addrs[0], addrs[1]
	out.tcpEcho(t, refusedHost, "timeline-refused")
	env.Each(t, func(t *testing.T, r *testharness.Runner) { tlRun(t, r, out, sshHost, refusedHost) })
}

func tlRun(t *testing.T, r *testharness.Runner, out *shxOutsideHost, sshHost, refusedHost string) {
	env := H(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	shxShieldRunner(t, ctx, r)
	agentBin, err := env.Bin("terok-ssh-agent")
	if err != nil {
		t.Fatal(err)
	}

	ports := testkit.FreePorts(t, 3)
	gatePort, proxyPort, agentPort := ports[0], ports[1], ports[2]
	profiles := filepath.Join(r.Dirs.Umbrella, "shield", "profiles")
	if err := r.Mkdir(profiles, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteFile(filepath.Join(profiles, "tl.txt"), []byte("# timeline e2e: the sshd only\n"+sshHost+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteConfig(fmt.Sprintf("gate_port = %d\nproxy_port = %d\nssh_agent_port = %d\nshield_profiles = [\"tl\"]\n",
		gatePort, proxyPort, agentPort)); err != nil {
		t.Fatal(err)
	}

	// Gate: the project's mirror and a task token.
	gateMirrored(t, ctx, r, "proj")
	mustOK(t, "gate ensure", r.Sandbox(ctx, "gate", "ensure"))
	gateTok := strings.TrimSpace(mustOK(t, "gate token", r.Sandbox(ctx, "gate", "token", "create", "proj", "task-1")).Stdout)
	gateURL := strings.TrimSpace(mustOK(t, "gate url", r.Sandbox(ctx, "gate", "url", "--token", gateTok, "proj")).Stdout)

	// Proxy: an upstream of the test's own and its real API key.
	up := newPxUpstream(t)
	if err := r.Mkdir(r.Dirs.Credentials, 0o700); err != nil {
		t.Fatal(err)
	}
	routes := fmt.Sprintf(`{"e2e": {"upstream": "http://%s", "auth_header": "dynamic"}}`+"\n", up.addr)
	if err := r.WriteFile(filepath.Join(r.Dirs.Credentials, "routes.json"), []byte(routes), 0o600); err != nil {
		t.Fatal(err)
	}
	apiKey := "sk-e2e-REAL-timeline-" + shxRandID(t) + shxRandID(t)
	mustOK(t, "credentials set", pxSandboxStdin(ctx, r, apiKey+"\n", "credentials", "set", "e2e"))
	mustOK(t, "proxy start", r.Sandbox(ctx, "proxy", "start"))
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		r.Sandbox(c, "proxy", "stop")
	})
	mustOK(t, "proxy ensure", r.Sandbox(ctx, "proxy", "ensure"))
	proxyTok := strings.TrimSpace(mustOK(t, "proxy token", r.Sandbox(ctx, "proxy", "token", "create", "proj", "task-1", "--provider", "e2e")).Stdout)

	// SSH: the project's key, a task token, and sshd on the outside host
	// trusting the key.
	mustOK(t, "ssh init", r.Sandbox(ctx, "ssh", "init", "proj"))
	var rows []struct{ Path string }
	res := mustOK(t, "ssh list", r.Sandbox(ctx, "ssh", "list", "--json"))
	if err := json.Unmarshal([]byte(res.Stdout), &rows); err != nil || len(rows) != 1 {
		t.Fatalf("ssh list: %v\n%s", err, res)
	}
	keyFile := rows[0].Path
	pub, err := os.ReadFile(keyFile + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	sshTok := strings.TrimSpace(mustOK(t, "ssh token", r.Sandbox(ctx, "ssh", "token", "create", "proj", "task-1")).Stdout)
	// The proxy runs the agent as its child on ssh_agent_port
	// (docs/credential-proxy.md, Design); both log to the proxy's log file.
	proxyLog := filepath.Join(r.Dirs.State, "proxy", "credential-proxy.log")
	agentLog := func() string { b, _ := os.ReadFile(proxyLog); return string(b) }
	hostKeyFP := tlStartSSHD(t, out, sshHost, strings.TrimSpace(string(pub)))

	// The task: shield on (no bypass), every credential in its environment.
	name := r.Name("timeline")
	run := mustOK(t, "run", r.Sandbox(ctx, "run", "--name", name, "--project", "proj", "--task", "task-1", "--image", env.Image,
		"-v", agentBin+":/opt/terok/terok-ssh-agent:ro",
		"-e", "GATE_URL="+gateURL, "-e", "ANTHROPIC_API_KEY="+proxyTok,
		"-e", "TEROK_SSH_AGENT_TOKEN="+sshTok, "-e", "TEROK_SSH_AGENT_PORT="+strconv.Itoa(agentPort),
		"--", "sleep", "600"))
	// The printed command line names the gate URL without its token
	// (docs/runner.md, Redaction).
	if !strings.Contains(run.Stdout, "GATE_URL=http://<redacted>@host.containers.internal:") {
		t.Errorf("run's command line:\n%s", run.Stdout)
	}
	in := func(what, script string) string {
		t.Helper()
		res := r.Podman(ctx, "exec", name, "bash", "-c", "set -u; export HOME=/tmp GIT_TERMINAL_PROMPT=0; cd /tmp; "+script)
		if res.Code != 0 {
			t.Fatalf("%s in the task: %s\nagent:\n%s", what, res, agentLog())
		}
		return res.Stdout
	}

	// 1. Clone and push through the gate.
	in("clone and push", `g="git -c user.name=task -c user.email=task@example.invalid"
$g clone -q "$GATE_URL" work && cd work && $g commit -q --allow-empty -m "from the timeline task" && $g push -q origin HEAD:refs/heads/timeline`)
	// 2. A call through the proxy with the phantom token.
	call := fmt.Sprintf(`curl -sS -m 30 -o /dev/null -w '%%{http_code}' -H "x-api-key: $ANTHROPIC_API_KEY" http://host.containers.internal:%d/v1/messages`, proxyPort)
	if got := in("proxy call", call); got != "200" {
		t.Fatalf("proxy call: status %q", got)
	}
	// 3. A signature through the agent: real ssh to the outside sshd.
	sshCmd := `/opt/terok/terok-ssh-agent bridge --attempts 5 -- ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=no ` +
		`-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=30 root@` + sshHost + ` echo 'SSH-$((40+2))'`
	if got := in("ssh", sshCmd); !strings.Contains(got, "SSH-42") {
		t.Fatalf("ssh through the agent: %q\nagent:\n%s", got, agentLog())
	}
	// 4. The task's tokens revoked (`proxy token revoke` revokes every
	// phantom token of the task, the SSH agent's too): the next call is
	// refused, and so is ssh.
	mustOK(t, "proxy token revoke", r.Sandbox(ctx, "proxy", "token", "revoke", "proj", "task-1"))
	if got := in("revoked proxy call", call); got != "401" {
		t.Fatalf("revoked proxy call: status %q", got)
	}
	if got := in("ssh after the revoke", sshCmd+" || echo SSH-REFUSED"); strings.Contains(got, "SSH-42") || !strings.Contains(got, "SSH-REFUSED") {
		t.Fatalf("ssh with a revoked token: %q", got)
	}
	// 5. A destination the shield refuses (its route through our veth was
	// asserted by shxNewNetnsHost).
	if ok, msg := shxReach(ctx, r, name, refusedHost, shxOutsidePort, "timeline-refused"); ok {
		t.Fatalf("the unlisted host is reachable: %s", msg)
	}
	shxWaitFor(t, 60*time.Second, "the shield's refused record in the timeline", func() bool {
		res := r.Sandbox(ctx, "audit", "task-1", "--project", "proj", "--json")
		return res.Code == 0 && strings.Contains(res.Stdout, `"dst":"`+refusedHost+`"`)
	})
	// The daemons stop: the proxy flushes its queue, the logs are complete.
	mustOK(t, "proxy stop", r.Sandbox(ctx, "proxy", "stop"))
	mustOK(t, "gate stop", r.Sandbox(ctx, "gate", "stop"))

	au := mustOK(t, "audit", r.Sandbox(ctx, "audit", "task-1", "--project", "proj", "--json"))
	tlCheckTimeline(t, au.Stdout, map[string]string{"gate": gateTok, "proxy": proxyTok, "ssh": sshTok}, refusedHost, hostKeyFP)

	var sum struct {
		Records  int                       `json:"records"`
		Outcomes map[string]map[string]int `json:"outcomes"`
		Reasons  []struct {
			Name  string `json:"name"`
			Count int    `json:"count"`
		} `json:"reasons"`
	}
	sres := mustOK(t, "audit --summary", r.Sandbox(ctx, "audit", "task-1", "--project", "proj", "--summary", "--json"))
	if err := json.Unmarshal([]byte(sres.Stdout), &sum); err != nil {
		t.Fatalf("summary: %v\n%s", err, sres.Stdout)
	}
	if n := len(jsonLines(t, au.Stdout)); sum.Records != n {
		t.Errorf("summary counts %d records, the timeline has %d:\n%s", sum.Records, n, sres.Stdout)
	}
	for _, w := range []struct {
		ch, outcome string
		min         int
	}{{"gate", "ok", 2}, {"proxy", "ok", 1}, {"proxy", "refused", 1}, {"ssh", "ok", 1}, {"shield", "refused", 1}} {
		if got := sum.Outcomes[w.ch][w.outcome]; got < w.min {
			t.Errorf("summary: %s %s = %d, want at least %d:\n%s", w.ch, w.outcome, got, w.min, sres.Stdout)
		}
	}
	if got := sum.Outcomes["proxy"]["ok"]; got != 1 {
		t.Errorf("summary: proxy ok = %d, want exactly 1", got)
	}

	// No secret anywhere: the API key, the SSH private key, and each token
	// beyond its prefix, in no file under the run's state, runtime and
	// config roots, in no daemon log and not in the audit output.
	mustOK(t, "stop", r.Sandbox(ctx, "stop", name))
	secrets := map[string]string{"api key": apiKey}
	for ch, tok := range map[string]string{"gate": gateTok, "proxy": proxyTok, "ssh": sshTok} {
		secrets[ch+" token"] = strings.TrimPrefix(tok, audit.TokenPrefix(tok))
	}
	for what, s := range tlKeySecrets(t, keyFile) {
		secrets[what] = s
	}
	// The stores that hold a secret by design: the gate's token file (the
	// gate compares against it) and the key files themselves.
	allowed := map[string]string{
		filepath.Join(r.Dirs.State, "gate", "tokens.json"): "gate token",
	}
	haystacks := map[string][]byte{
		"audit --json":    []byte(au.Stdout),
		"audit --summary": []byte(sres.Stdout),
		"run's output":    []byte(run.Stdout + run.Stderr),
	}
	files := 0
	for _, root := range []string{r.Dirs.State, r.Dirs.Runtime, r.Dirs.Config, r.Dirs.XDGState, r.Dirs.Umbrella} {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if os.IsNotExist(err) {
					return nil
				}
				return err
			}
			if !d.Type().IsRegular() || p == keyFile {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			haystacks[p] = b
			files++
			return nil
		})
		if err != nil {
			t.Fatalf("walk %s: %v", root, err)
		}
	}
	for where, b := range haystacks {
		for what, s := range secrets {
			if i := bytes.Index(b, []byte(s)); i >= 0 && allowed[where] != what {
				// The line around it, the secret blanked, to find the writer.
				from, to := max(0, i-200), min(len(b), i+len(s)+200)
				t.Errorf("%s holds the %s: %q", where, what, strings.ReplaceAll(string(b[from:to]), s, "<SECRET>"))
			}
		}
	}
	t.Logf("%d files and %d outputs searched for %d secrets", files, len(haystacks)-files, len(secrets))
}

// tlCheckTimeline asserts the task's records: each event of the run, in
// the order the task caused them, with its channel's documented members,
// the tokens by prefix only.
func tlCheckTimeline(t *testing.T, out string, toks map[string]string, refusedHost, hostKeyFP string) {
	t.Helper()
	type step struct {
		what string
		ok   func(m map[string]any) bool
	}
	steps := []step{
		{"gate clone", func(m map[string]any) bool {
			return m["channel"] == "gate" && m["event"] == "clone" && m["outcome"] == "ok" && m["repo"] == "proj.git" && str(m["status"]) == "200"
		}},
		{"gate push", func(m map[string]any) bool {
			refs, _ := json.Marshal(m["refs"])
			return m["channel"] == "gate" && m["event"] == "push" && m["outcome"] == "ok" &&
				strings.Contains(string(refs), `"ref":"refs/heads/timeline"`) && strings.Contains(string(refs), `"old":"0000000`)
		}},
		{"proxy call", func(m map[string]any) bool {
			return m["channel"] == "proxy" && m["event"] == "request" && m["outcome"] == "ok" && m["method"] == "GET" &&
				m["path"] == "/v1/messages" && str(m["status"]) == "200" && m["provider"] == "e2e" && m["host"] != nil && m["duration_ms"] != nil
		}},
		{"ssh signature", func(m map[string]any) bool {
			return m["channel"] == "ssh" && m["event"] == "sign" && m["outcome"] == "ok" &&
				strings.HasPrefix(str(m["key_fingerprint"]), "SHA256:") && len(str(m["data_sha256"])) == 64 &&
				m["key_comment"] != nil && m["sig_algorithm"] != nil && m["dest_fingerprint"] == hostKeyFP
		}},
		{"proxy refusal", func(m map[string]any) bool {
			return m["channel"] == "proxy" && m["outcome"] == "refused" && m["reason"] == "revoked" && str(m["status"]) == "401"
		}},
		{"shield refusal", func(m map[string]any) bool {
			return m["channel"] == "shield" && m["event"] == "refused" && m["outcome"] == "refused" &&
				m["reason"] == "not-allowlisted" && m["dst"] == refusedHost && str(m["dport"]) == shxOutsidePort && m["proto"] == "tcp"
		}},
	}
	recs := jsonLines(t, out)
	first := make([]int, len(steps))
	for i := range first {
		first[i] = -1
	}
	var prev time.Time
	for i, m := range recs {
		tm, err := time.Parse(time.RFC3339Nano, str(m["time"]))
		if err != nil {
			t.Fatalf("record %d: time %v: %v", i, m["time"], err)
		}
		if tm.Before(prev) {
			t.Fatalf("record %d out of time order:\n%s", i, out)
		}
		prev = tm
		if m["v"] != float64(1) || m["task"] != "task-1" && m["channel"] != "shield" {
			t.Fatalf("record %d of another task or version: %v", i, m)
		}
		if ch := str(m["channel"]); ch != "shield" {
			if m["project"] != "proj" || m["token_prefix"] != audit.TokenPrefix(toks[ch]) {
				t.Fatalf("record %d: project or token prefix: %v", i, m)
			}
		}
		for j, s := range steps {
			if first[j] < 0 && s.ok(m) {
				first[j] = i
			}
		}
	}
	for j, s := range steps {
		if first[j] < 0 {
			t.Fatalf("no %s record in the timeline:\n%s", s.what, out)
		}
		if j > 0 && first[j] < first[j-1] {
			t.Fatalf("the %s (record %d) before the %s (record %d):\n%s", s.what, first[j], steps[j-1].what, first[j-1], out)
		}
	}
}

// tlStartSSHD runs sshd on addr:22 inside the outside host's netns with a
// host key of its own, trusting one public key for root; it returns the
// host key's fingerprint (what the agent records from OpenSSH's
// session-bind).
func tlStartSSHD(t *testing.T, o *shxOutsideHost, addr, trusted string) string {
	t.Helper()
	fp := sshdAt(t, []string{"ip", "netns", "exec", o.ns}, addr, 22, trusted, "timeline host key")
	shxWaitFor(t, 10*time.Second, "sshd on the outside host", func() bool {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, "22"), time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return fp
}

// tlKeySecrets is what of the private key must appear nowhere: the PEM
// body lines that carry private material, and for ed25519 the seed in hex
// and base64.
func tlKeySecrets(t *testing.T, keyFile string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s is not PEM", keyFile)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	// The first body lines encode the format header and the public key,
	// the last the padding: the middle ones the private key.
	for i := 3; i < len(lines)-2; i++ {
		out["private key line "+strconv.Itoa(i)] = lines[i]
	}
	raw, err := ssh.ParseRawPrivateKey(b)
	if err != nil {
		t.Fatalf("parse %s: %v", keyFile, err)
	}
	if k, ok := raw.(*ed25519.PrivateKey); ok {
		raw = *k
	}
	if k, ok := raw.(ed25519.PrivateKey); ok {
		seed := k.Seed()
		out["private key seed (hex)"] = hex.EncodeToString(seed)
		out["private key seed (base64)"] = base64.StdEncoding.EncodeToString(seed)[:40]
		out["private key seed (base64url)"] = base64.RawURLEncoding.EncodeToString(seed)[:40]
	}
	if len(out) == 0 {
		t.Fatalf("no private material found in %s", keyFile)
	}
	return out
}
