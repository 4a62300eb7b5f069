//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/common/testkit"
	"terok.dev/sandbox/runner/internal/testharness"
)

// pxUpstream is the provider: a local server on 127.0.0.1 that records
// the credential it received and never echoes it.
type pxUpstream struct {
	mu   sync.Mutex
	seen []http.Header
	urls []string
	addr string
}

func newPxUpstream(t *testing.T) *pxUpstream {
	u := &pxUpstream{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.addr = l.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.seen = append(u.seen, r.Header.Clone())
		u.urls = append(u.urls, r.RequestURI)
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"e2e":"upstream-ok"}`)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return u
}

func pxSandboxStdin(ctx context.Context, r *testharness.Runner, stdin string, args ...string) testharness.Result {
	bin, err := r.Env().Bin("terok-sandbox")
	if err != nil {
		return testharness.Result{Code: -1, Err: err}
	}
	cmd := r.Command(ctx, bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	return testharness.Collect(cmd)
}

// TestProxyFromContainer: a container launched with terok-sandbox run calls
// the credential proxy at host.containers.internal with its phantom token
// and gets the upstream's answer; the upstream received the real
// credential, which never entered the container or the proxy's log.
func TestProxyFromContainer(t *testing.T) {
	H(t).Each(t, func(t *testing.T, r *testharness.Runner) { pxFromContainer(t, r, false) })
}

// TestProxyFromContainerShielded is the same with the shield up (no
// bypass): the shield lets the proxy port through on the host gateway.
func TestProxyFromContainerShielded(t *testing.T) {
	H(t).Each(t, func(t *testing.T, r *testharness.Runner) { pxFromContainer(t, r, true) })
}

func pxFromContainer(t *testing.T, r *testharness.Runner, shielded bool) {
	env := H(t)
	{
		ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
		defer cancel()
		runFlags := []string{"--shield-bypass"}
		if shielded {
			shxShieldRunner(t, ctx, r)
			runFlags = nil
		}
		up := newPxUpstream(t)
		ports := testkit.FreePorts(t, 2)
		proxyPort, agentPort := ports[0], ports[1]
		if err := r.WriteConfig(fmt.Sprintf("proxy_port = %d\nssh_agent_port = %d\n", proxyPort, agentPort)); err != nil {
			t.Fatal(err)
		}
		if err := r.Mkdir(r.Dirs.Credentials, 0o700); err != nil {
			t.Fatal(err)
		}
		routes := fmt.Sprintf(`{"e2e": {"upstream": "http://%s", "auth_header": "dynamic"}}`+"\n", up.addr)
		if err := r.WriteFile(filepath.Join(r.Dirs.Credentials, "routes.json"), []byte(routes), 0o600); err != nil {
			t.Fatal(err)
		}
		secret := "sk-e2e-REAL-" + r.Kind + "-5e3c2e7"
		mustOK(t, "credentials set", pxSandboxStdin(ctx, r, secret+"\n", "credentials", "set", "e2e"))
		mustOK(t, "proxy start", r.Sandbox(ctx, "proxy", "start"))
		t.Cleanup(func() {
			c, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			r.Sandbox(c, "proxy", "stop")
		})
		mustOK(t, "proxy ensure", r.Sandbox(ctx, "proxy", "ensure"))
		st := mustOK(t, "proxy status", r.Sandbox(ctx, "proxy", "status"))
		if !strings.Contains(st.Stdout, "Status: running") || !strings.Contains(st.Stdout, "Credentials: e2e") || !strings.Contains(st.Stdout, "(1 configured)") {
			t.Fatalf("status:\n%s", st.Stdout)
		}
		tok := strings.TrimSpace(mustOK(t, "token create", r.Sandbox(ctx, "proxy", "token", "create", "proj", "task1", "--provider", "e2e")).Stdout)

		call := fmt.Sprintf(`curl -sS -o /tmp/body -w '%%{http_code}' -H "x-api-key: $ANTHROPIC_API_KEY" 'http://host.containers.internal:%d/v1/messages?q=e2e%%20x'`, proxyPort)
		// Another host service: reachable with the bypass, refused by the shield.
		other := newPxUpstream(t)
		_, otherPort, _ := net.SplitHostPort(other.addr)
		probe := `curl -sS -m 10 -o /dev/null -w '%{http_code}' http://host.containers.internal:` + otherPort + `/ 2>/dev/null`
		script := `echo "status=$(` + call + `)"; echo "body=$(cat /tmp/body)"; echo "other=$(` + probe + `)"; env | grep -c sk-e2e-REAL || true; echo '>> init complete'`
		name := r.Name("proxy")
		run := mustOK(t, "run", r.Sandbox(ctx, append(append([]string{"run"}, runFlags...), "--name", name, "--image", env.Image,
			"-e", "ANTHROPIC_API_KEY="+tok, "--", "sh", "-c", script)...))
		if strings.Contains(run.Stdout+run.Stderr, tok) {
			t.Errorf("phantom token printed in the run command line")
		}
		logs := mustOK(t, "logs", r.Sandbox(ctx, "logs", name, "--until-ready", "--timeout", "120"))
		if !strings.Contains(logs.Stdout, "status=200") || !strings.Contains(logs.Stdout, `body={"e2e":"upstream-ok"}`) {
			t.Fatalf("container did not get the upstream answer through the proxy:\n%s", logs.Stdout)
		}
		if strings.Contains(logs.Stdout, secret) {
			t.Fatal("the real secret reached the container")
		}
		if wantOther := map[bool]string{false: "other=200", true: "other=000"}[shielded]; !strings.Contains(logs.Stdout, wantOther) {
			t.Errorf("shielded=%v: want %s for another host port:\n%s", shielded, wantOther, logs.Stdout)
		}
		up.mu.Lock()
		if len(up.seen) != 1 || up.seen[0].Get("X-Api-Key") != secret || up.urls[0] != "/v1/messages?q=e2e%20x" {
			t.Errorf("upstream saw %d requests, x-api-key %q, url %v", len(up.seen), up.seen[0].Get("X-Api-Key"), up.urls)
		}
		up.mu.Unlock()

		// Revoked: the next request from a container is refused.
		mustOK(t, "token revoke", r.Sandbox(ctx, "proxy", "token", "revoke", "proj", "task1"))
		name2 := r.Name("proxy-revoked")
		mustOK(t, "run revoked", r.Sandbox(ctx, append(append([]string{"run"}, runFlags...), "--name", name2, "--image", env.Image,
			"-e", "ANTHROPIC_API_KEY="+tok, "--", "sh", "-c", `echo "status=$(`+call+`)"; echo '>> init complete'`)...))
		logs = mustOK(t, "logs revoked", r.Sandbox(ctx, "logs", name2, "--until-ready", "--timeout", "120"))
		if !strings.Contains(logs.Stdout, "status=401") {
			t.Fatalf("revoked token not refused:\n%s", logs.Stdout)
		}
		logFile := filepath.Join(r.Dirs.State, "proxy", "credential-proxy.log")
		b, err := os.ReadFile(logFile)
		if err != nil {
			t.Fatalf("proxy log: %v", err)
		}
		if strings.Contains(string(b), secret) || strings.Contains(string(b), tok) {
			t.Errorf("proxy log contains the secret or the phantom token")
		}
		mustOK(t, "proxy stop", r.Sandbox(ctx, "proxy", "stop"))

		// The task's timeline (docs/audit.md, The audit command; the proxy
		// flushes its records on shutdown): the call, then the refusal of
		// the revoked token, the query string dropped, neither the secret
		// nor the phantom token beyond its prefix.
		au := mustOK(t, "audit", r.Sandbox(ctx, "audit", "task1", "--project", "proj", "--json"))
		if strings.Contains(au.Stdout, secret) || strings.Contains(au.Stdout, tok) || strings.Contains(au.Stdout, "q=e2e") {
			t.Fatalf("audit output holds the secret, the token or the query:\n%s", au.Stdout)
		}
		var got []string
		for _, m := range jsonLines(t, au.Stdout) {
			if m["channel"] != "proxy" || m["token_prefix"] != audit.TokenPrefix(tok) {
				t.Fatalf("audit record of another channel or token: %v", m)
			}
			got = append(got, fmt.Sprintf("%v %v %v %v %v", m["outcome"], m["reason"], m["method"], m["path"], m["status"]))
		}
		want := []string{"ok <nil> GET /v1/messages 200", "refused revoked GET /v1/messages 401"}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("proxy timeline %q, want %q:\n%s", got, want, au.Stdout)
		}
	}
}
