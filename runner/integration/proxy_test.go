package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"terok.dev/sandbox/common/testkit"
	"terok.dev/sandbox/runner/internal/cli"
)

// proxyCLI runs the real terok-sandbox binary, with the real
// terok-credential-proxy and terok-ssh-agent next to it, in isolated roots.
type proxyCLI struct {
	t    *testing.T
	bin  string
	env  []string
	cred string
	run  string
}

func newProxyCLI(t *testing.T) *proxyCLI {
	t.Helper()
	bin := t.TempDir()
	for name, pkg := range map[string]string{
		"terok-sandbox":          "terok.dev/sandbox/runner/cmd/terok-sandbox",
		"terok-credential-proxy": "terok.dev/sandbox/credproxy/cmd/terok-credential-proxy",
		"terok-ssh-agent":        "terok.dev/sandbox/sshagent/cmd/terok-ssh-agent",
	} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, name), pkg).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", name, err, out)
		}
	}
	base := t.TempDir()
	p := &proxyCLI{t: t, bin: filepath.Join(bin, "terok-sandbox"), cred: filepath.Join(base, "cred"), run: filepath.Join(base, "run")}
	cfgDir := filepath.Join(base, "config")
	os.MkdirAll(cfgDir, 0o700)
	ports := testkit.FreePorts(t, 2)
	os.WriteFile(filepath.Join(cfgDir, "config.toml"), []byte(fmt.Sprintf("proxy_port = %d\nssh_agent_port = %d\n", ports[0], ports[1])), 0o600)
	p.env = append(os.Environ(),
		"TEROK_SANDBOX_STATE_DIR="+filepath.Join(base, "state"),
		"TEROK_SANDBOX_RUNTIME_DIR="+p.run,
		"TEROK_SANDBOX_CONFIG_DIR="+cfgDir,
		"TEROK_CREDENTIALS_DIR="+p.cred,
		"TEROK_CONFIG_DIR="+filepath.Join(base, "umbrella"),
		"XDG_STATE_HOME="+filepath.Join(base, "xdgstate"),
		"HOME="+filepath.Join(base, "home"),
	)
	t.Cleanup(func() { p.sandbox("", "proxy", "stop") })
	return p
}

func (p *proxyCLI) sandbox(stdin string, args ...string) (int, string, string) {
	p.t.Helper()
	cmd := exec.Command(p.bin, args...)
	cmd.Env = p.env
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		p.t.Fatal(err)
	}
	return code, out.String(), errb.String()
}

func (p *proxyCLI) ok(stdin string, args ...string) string {
	p.t.Helper()
	code, out, errOut := p.sandbox(stdin, args...)
	if code != 0 {
		p.t.Fatalf("terok-sandbox %v: exit %d\n%s%s", args, code, out, errOut)
	}
	return out
}

func TestProxyAndCredentialsCommands(t *testing.T) {
	p := newProxyCLI(t)
	const secret = "sk-REAL-cli-secret-77"

	// Upstream that records the credential it got.
	var mu sync.Mutex
	var gotAuth []string
	up := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		gotAuth = append(gotAuth, r.Header.Get("X-Api-Key"))
		mu.Unlock()
		io.WriteString(w, "upstream-ok")
	})}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	go up.Serve(l)
	defer up.Close()

	out := p.ok("", "proxy", "status")
	if !strings.Contains(out, "Status: stopped\n") || !strings.Contains(out, "Credentials: none stored\n") ||
		!strings.Contains(out, "Routes: "+filepath.Join(p.cred, "routes.json")+" (0 configured)\n") ||
		!strings.Contains(out, "Socket: "+filepath.Join(p.run, "credential-proxy.sock")+"\n") ||
		!strings.Contains(out, "DB:     "+filepath.Join(p.cred, "credentials.db")+"\n") {
		t.Errorf("status before start:\n%s", out)
	}

	// Credentials: never from argv; from stdin; masked unless asked.
	if code, _, errOut := p.sandbox("", "credentials", "set", "claude", secret); code != 2 || !strings.Contains(errOut, "never taken from the command line") {
		t.Errorf("secret on argv: %d %q", code, errOut)
	}
	if code, _, errOut := p.sandbox("", "credentials", "set", "claude"); code != 1 || !strings.Contains(errOut, "no secret given") {
		t.Errorf("empty stdin: %d %q", code, errOut)
	}
	if code, _, errOut := p.sandbox(`{"type": "oauth"`, "credentials", "set", "claude"); code != 1 || !strings.Contains(errOut, "not a JSON object") {
		t.Errorf("bad JSON: %d %q", code, errOut)
	}
	if out := p.ok(secret+"\n", "credentials", "set", "claude"); !strings.Contains(out, "Stored credential claude in set default (type api_key)") || strings.Contains(out, secret) {
		t.Errorf("set: %q", out)
	}
	f := filepath.Join(t.TempDir(), "gh.json")
	os.WriteFile(f, []byte(`{"type": "pat", "token": "ghp-file-secret", "note": "ci"}`), 0o600)
	p.ok("", "credentials", "set", "gh", "--from-file", f, "--set", "work")
	if out := p.ok("", "credentials", "list"); out != "claude\n" {
		t.Errorf("list: %q", out)
	}
	var names []string
	if err := json.Unmarshal([]byte(p.ok("", "credentials", "list", "--set", "work", "--json")), &names); err != nil || len(names) != 1 || names[0] != "gh" {
		t.Errorf("list --json: %q %v", names, err)
	}
	got := p.ok("", "credentials", "get", "claude")
	if strings.Contains(got, secret) || !strings.Contains(got, "key: <hidden, 21 chars>") || !strings.Contains(got, "type: api_key") {
		t.Errorf("get (masked): %q", got)
	}
	var shown map[string]any
	if err := json.Unmarshal([]byte(p.ok("", "credentials", "get", "gh", "--set", "work", "--show-secret", "--json")), &shown); err != nil || shown["token"] != "ghp-file-secret" || shown["note"] != "ci" {
		t.Errorf("get --show-secret --json: %v %v", shown, err)
	}
	if code, _, errOut := p.sandbox("", "credentials", "get", "nope"); code != 1 || !strings.Contains(errOut, "no credential nope in set default") {
		t.Errorf("get missing: %d %q", code, errOut)
	}

	// Routes and a phantom token.
	os.WriteFile(filepath.Join(p.cred, "routes.json"), []byte(fmt.Sprintf(`{"claude": {"upstream": "http://%s", "auth_header": "dynamic"}}`+"\n", l.Addr())), 0o600)
	tok := strings.TrimSpace(p.ok("", "proxy", "token", "create", "proj", "task1", "--provider", "claude"))
	if !strings.HasPrefix(tok, "terok-p-") || len(tok) != 40 {
		t.Fatalf("token %q", tok)
	}
	if list := p.ok("", "proxy", "token", "list"); strings.Contains(list, tok) || !strings.Contains(list, tok[:12]+"…") || !strings.Contains(list, "proj") {
		t.Errorf("token list shows more than the prefix:\n%s", list)
	}
	if code, _, _ := p.sandbox("", "proxy", "token", "create", "proj"); code != 2 {
		t.Errorf("token create without TASK: %d", code)
	}
	if code, _, errOut := p.sandbox("", "proxy", "token", "create", "proj", "a/b", "--provider", "claude"); code != 2 || !strings.Contains(errOut, `invalid task id "a/b"`) {
		t.Errorf("token create with a bad task id: %d %q", code, errOut)
	}

	// Lifecycle with the real daemon.
	if code, out, errOut := p.sandbox("", "proxy", "stop"); code != 0 || out != "Credential proxy is not running.\n" {
		t.Errorf("stop before start: %d %q %q", code, out, errOut)
	}
	if code, _, errOut := p.sandbox("", "proxy", "ensure"); code != 1 || !strings.Contains(errOut, "Credential proxy is not reachable.") {
		t.Errorf("ensure before start: %d %q", code, errOut)
	}
	if out := p.ok("", "proxy", "start"); out != "Credential proxy started.\n" {
		t.Errorf("start: %q", out)
	}
	if out := p.ok("", "proxy", "start"); out != "Credential proxy is already running.\n" {
		t.Errorf("second start: %q", out)
	}
	out = p.ok("", "proxy", "status")
	if !strings.Contains(out, "Status: running\n") || !strings.Contains(out, "(1 configured)") || !strings.Contains(out, "Credentials: claude\n") {
		t.Errorf("status running:\n%s", out)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(p.ok("", "proxy", "status", "--json")), &st); err != nil || st["mode"] != "daemon" || st["running"] != true || st["healthy"] != true {
		t.Errorf("status --json: %v %v", st, err)
	}
	if out := p.ok("", "proxy", "ensure"); !strings.Contains(out, "reachable") {
		t.Errorf("ensure: %q", out)
	}
	if n, _ := st["routes_configured"].(float64); n != 1 {
		t.Errorf("routes_configured = %v", st["routes_configured"])
	}
	proxyURL := proxyURLFromConfig(t, p)
	req, _ := http.NewRequest("GET", proxyURL+"/v1/messages", nil)
	req.Header.Set("X-Api-Key", tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	mu.Lock()
	if resp.StatusCode != 200 || string(body) != "upstream-ok" || len(gotAuth) != 1 || gotAuth[0] != secret {
		t.Errorf("through the proxy: %d %q, upstream saw %q", resp.StatusCode, body, gotAuth)
	}
	mu.Unlock()
	if out := p.ok("", "proxy", "token", "revoke", "proj", "task1"); out != "Revoked 1 phantom token(s) of proj/task1.\n" {
		t.Errorf("revoke: %q", out)
	}
	if code, out, errOut := p.sandbox("", "proxy", "token", "revoke", "proj", "task1"); code != cli.ExitError || !strings.Contains(errOut, "Error: no phantom tokens of proj/task1") {
		t.Errorf("second revoke: %d %q %q", code, out, errOut)
	}
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("revoked token: %d", resp.StatusCode)
	}
	if out := p.ok("", "proxy", "stop"); out != "Credential proxy stopped.\n" {
		t.Errorf("stop: %q", out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(p.ok("", "proxy", "status"), "Status: stopped") {
		if time.Now().After(deadline) {
			t.Fatal("proxy did not stop")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// No user systemd here (and user units are refused for root): install
	// and uninstall fail loudly. The daemonctl proxy tests cover the messages of
	// a non-root user without systemd.
	for _, cmd := range []string{"install", "uninstall"} {
		code, _, errOut := p.sandbox("", "proxy", cmd)
		ok := strings.Contains(errOut, "Error: systemd user services are not available")
		if os.Geteuid() == 0 {
			ok = strings.Contains(errOut, "Error: refusing to manage systemd user units as root")
		}
		if code != 1 || !ok {
			t.Errorf("%s: %d %q", cmd, code, errOut)
		}
	}
	if out := p.ok("", "credentials", "delete", "claude"); out != "Deleted credential claude from set default.\n" {
		t.Errorf("delete: %q", out)
	}
	if out := p.ok("", "credentials", "list"); out != "No credentials stored in set default.\n" {
		t.Errorf("list after delete: %q", out)
	}
	logb, _ := os.ReadFile(filepath.Join(filepath.Dir(p.run), "state", "proxy", "credential-proxy.log"))
	if strings.Contains(string(logb), secret) || strings.Contains(string(logb), tok) {
		t.Errorf("proxy log leaks a secret or token:\n%s", logb)
	}
	if !strings.Contains(string(logb), "Listening on") {
		t.Errorf("proxy log:\n%s", logb)
	}
}

func proxyURLFromConfig(t *testing.T, p *proxyCLI) string {
	for i := len(p.env) - 1; i >= 0; i-- { // the last one wins, as in exec
		if e := p.env[i]; strings.HasPrefix(e, "TEROK_SANDBOX_CONFIG_DIR=") {
			b, _ := os.ReadFile(filepath.Join(strings.TrimPrefix(e, "TEROK_SANDBOX_CONFIG_DIR="), "config.toml"))
			var port int
			fmt.Sscanf(string(b), "proxy_port = %d", &port)
			return fmt.Sprintf("http://127.0.0.1:%d", port)
		}
	}
	t.Fatal("no config dir")
	return ""
}
