package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/common/gatetokens"
	"terok.dev/sandbox/common/testkit"
)

// gateCLI runs terok-sandbox with state/runtime dirs under dir and PATH
// leading to a freshly built terok-gate.
type gateCLI struct {
	t   *testing.T
	dir string
	env config.Env
}

func newGateCLI(t *testing.T) *gateCLI {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	out, err := exec.Command("go", "build", "-o", filepath.Join(bin, "terok-gate"), "terok.dev/sandbox/gate/cmd/terok-gate").CombinedOutput()
	if err != nil {
		t.Fatalf("build terok-gate: %v\n%s", err, out)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	vars := testkit.RootVars(dir)
	vars["PATH"], vars["HOME"] = os.Getenv("PATH"), dir
	// Root: user units are refused, so start always takes the daemon path.
	env := testkit.Env(vars, 0, dir)
	return &gateCLI{t: t, dir: dir, env: env}
}

func (g *gateCLI) run(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Run(append([]string{Program}, args...), Deps{Stdout: &out, Stderr: &errb, Env: g.env})
	return code, out.String(), errb.String()
}

func TestGateDaemonLifecycleCLI(t *testing.T) {
	g := newGateCLI(t)
	port := testkit.FreePort(t)
	if code, out, _ := g.run("gate", "stop"); code != 0 || out != "Gate server is not running.\n" {
		t.Fatalf("stop when stopped: %d %q", code, out)
	}
	code, out, errOut := g.run("gate", "start", "--daemon", "--port", strconv.Itoa(port))
	if code != 0 || out != "Gate server daemon started.\n" {
		t.Fatalf("start: %d %q %q", code, out, errOut)
	}
	pidFile := filepath.Join(g.dir, "run", "gate-server.pid")
	data, _ := os.ReadFile(pidFile)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	t.Cleanup(func() {
		if pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	code, out, _ = g.run("gate", "status")
	want := fmt.Sprintf("Mode:      daemon\nRunning:   yes\nPort:      9418\nBase path: %s\n", filepath.Join(g.dir, "state", "gate"))
	if code != 0 || out != want {
		t.Fatalf("status: %d %q", code, out)
	}
	code, out, _ = g.run("gate", "status", "--json")
	var st map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st["mode"] != "daemon" || st["running"] != true {
		t.Fatalf("status --json: %d %q", code, out)
	}
	if code, out, errOut := g.run("gate", "ensure"); code != 0 {
		t.Fatalf("ensure: %d %q %q", code, out, errOut)
	}
	// Tokens: create, list by prefix, clone through the daemon, revoke.
	code, tok, _ := g.run("gate", "token", "create", "proj", "7")
	tok = strings.TrimSpace(tok)
	if code != 0 || !strings.HasPrefix(tok, "terok-g-") || len(tok) != 40 {
		t.Fatalf("token create: %d %q", code, tok)
	}
	code, out, _ = g.run("gate", "token", "list")
	if code != 0 || strings.Contains(out, tok) || !strings.Contains(out, tok[:12]+"…") || !strings.Contains(out, "proj") {
		t.Fatalf("token list must show only a prefix: %q", out)
	}
	if _, out, _ = g.run("gate", "token", "list", "--show-tokens", "--json"); !strings.Contains(out, tok) {
		t.Fatalf("token list --show-tokens: %q", out)
	}
	code, out, _ = g.run("gate", "url", "--token", tok, "proj")
	if code != 0 || strings.TrimSpace(out) != "http://"+tok+"@host.containers.internal:9418/proj.git" {
		t.Fatalf("url: %d %q", code, out)
	}
	src := filepath.Join(g.dir, "src")
	gitEnv := append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+g.dir, "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@x.invalid",
		"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@x.invalid")
	for _, args := range [][]string{{"init", "-q", "-b", "main", src}, {"-C", src, "commit", "-q", "--allow-empty", "-m", "first"}} {
		c := exec.Command("git", args...)
		c.Env = gitEnv
		if b, err := c.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v %s", args, err, b)
		}
	}
	if code, out, errOut := g.run("gate", "sync", "--upstream", src, "proj"); code != 0 || !strings.Contains(out, "Created gate mirror") {
		t.Fatalf("sync: %d %q %q", code, out, errOut)
	}
	if code, out, _ := g.run("gate", "last-commit", "--default-branch", "main", "--json", "proj"); code != 0 || !strings.Contains(out, `"commit_message": "first"`) {
		t.Fatalf("last-commit: %d %q", code, out)
	}
	if code, out, _ := g.run("gate", "compare", "--upstream", src, "--branch", "main", "--json", "proj"); code != 0 || !strings.Contains(out, `"is_stale": false`) {
		t.Fatalf("compare: %d %q", code, out)
	}
	clone := exec.Command("git", "clone", "-q", fmt.Sprintf("http://%s@127.0.0.1:%d/proj.git", tok, port), filepath.Join(g.dir, "c"))
	clone.Env = gitEnv
	if b, err := clone.CombinedOutput(); err != nil {
		t.Fatalf("clone through the daemon: %v %s", err, b)
	}
	// The daemon enforces the policy the CLI writes (docs/gate.md, Push policy).
	push := func() (string, error) {
		c := exec.Command("git", "-C", filepath.Join(g.dir, "c"), "push", "origin", "HEAD:refs/heads/main")
		c.Env = gitEnv
		b, err := c.CombinedOutput()
		return string(b), err
	}
	commit := exec.Command("git", "-C", filepath.Join(g.dir, "c"), "commit", "-q", "--allow-empty", "-m", "second")
	commit.Env = gitEnv
	if b, err := commit.CombinedOutput(); err != nil {
		t.Fatalf("commit: %v %s", err, b)
	}
	if b, err := push(); err == nil || !strings.Contains(b, "remote: terok gate: push refused") {
		t.Fatalf("push to the default branch: %v %s", err, b)
	}
	if code, _, errOut := g.run("gate", "policy", "proj", "--unprotect", "HEAD"); code != 0 {
		t.Fatalf("policy: %d %q", code, errOut)
	}
	if b, err := push(); err != nil {
		t.Fatalf("push after --unprotect HEAD: %v %s", err, b)
	}
	if code, out, _ := g.run("gate", "token", "revoke", "proj", "7"); code != 0 || out != "Revoked 1 token(s) of proj/7.\n" {
		t.Fatalf("revoke: %d %q", code, out)
	}
	// Nothing left to revoke: a thing that does not exist is an error.
	if code, out, errOut := g.run("gate", "token", "revoke", "proj", "7"); code != ExitError || out != "" || errOut != "Error: no gate tokens of proj/7\n" {
		t.Fatalf("second revoke: %d %q %q", code, out, errOut)
	}
	if entries, _ := gatetokens.Open(filepath.Join(g.dir, "state", "gate", "tokens.json"), filepath.Join(g.dir, "x.lock"), nil).List(); len(entries) != 0 {
		t.Fatalf("tokens left: %v", entries)
	}
	if code, out, _ := g.run("gate", "stop"); code != 0 || out != "Gate server daemon stopped.\n" {
		t.Fatalf("stop: %d %q", code, out)
	}
	if syscall.Kill(pid, 0) == nil {
		if stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); !strings.Contains(string(stat), ") Z ") {
			t.Fatal("daemon alive after gate stop")
		}
	}
	code, _, errOut = g.run("gate", "ensure")
	if code != 1 || !strings.Contains(errOut, "Gate server is not running.") || !strings.Contains(errOut, "terok-sandbox gate start --daemon") {
		t.Fatalf("ensure when stopped: %d %q", code, errOut)
	}
}

func TestGateUsageErrors(t *testing.T) {
	g := newGateCLI(t)
	for _, args := range [][]string{
		{"gate", "start", "--port", "70000", "--daemon"},
		{"gate", "token", "create", "proj"},
		{"gate", "token", "create", "../x", "1"},
		{"gate", "sync"},
		{"gate", "url", "proj"},
		{"gate", "status", "extra"},
		{"gate", "bogus"},
	} {
		if code, out, errOut := g.run(args...); code != ExitUsage && !(args[1] == "url" && code == ExitError) {
			t.Errorf("%v: code %d out %q err %q", args, code, out, errOut)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"gate", "token", "create", "proj", "a/b"}, `invalid task id "a/b": it contains '/'`},
		{[]string{"gate", "token", "create", "proj", "t!"}, `invalid task id "t!": it contains '!'`},
		{[]string{"gate", "token", "create", ".p", "1"}, `invalid project id ".p"`},
		{[]string{"gate", "url", "..", "--token", "t"}, `invalid project id ".."`},
		{[]string{"gate", "sync", "p q"}, `invalid project id "p q"`},
	} {
		if code, _, errOut := g.run(c.args...); code != ExitUsage || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: code %d err %q, want %q", c.args, code, errOut, c.want)
		}
	}
}

// gate token create --ttl stores the entry's expires member
// (docs/formats.md, Gate tokens file), flags before or after PROJECT TASK;
// list shows it; a bad TTL exits 2 with an example (the ssh/proxy parser)
// and issues nothing.
func TestGateTokenTTL(t *testing.T) {
	g := newGateCLI(t)
	code, out, errs := g.run("gate", "token", "create", "proj", "t1", "--ttl", "8h", "--json")
	var got map[string]string
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil {
		t.Fatalf("--ttl 8h: %d %q %q", code, out, errs)
	}
	exp, err := time.Parse(time.RFC3339, got["expires"])
	if err != nil || time.Until(exp) < 7*time.Hour || time.Until(exp) > 9*time.Hour {
		t.Fatalf("expires %q %v", got["expires"], err)
	}
	if code, out, errs := g.run("gate", "token", "create", "--ttl=90m", "proj", "t2"); code != 0 || !strings.HasPrefix(out, "terok-g-") || !strings.Contains(errs, "expires at") {
		t.Fatalf("--ttl before the arguments: %d %q %q", code, out, errs)
	}
	for _, bad := range []string{"8", "8x", "30s", "-1h", "9000h", "1d"} {
		code, out, errs := g.run("gate", "token", "create", "proj", "bad", "--ttl", bad)
		if code != ExitUsage || out != "" || !strings.Contains(errs, "--ttl") || !strings.Contains(errs, "e.g.") {
			t.Errorf("--ttl %q: exit %d %q %q", bad, code, out, errs)
		}
	}
	if code, out, errs := g.run("gate", "token", "create", "proj", "t3"); code != 0 || errs != "" || !strings.HasPrefix(out, "terok-g-") {
		t.Fatalf("no --ttl: %d %q %q", code, out, errs)
	}
	entries, err := gatetokens.Open(filepath.Join(g.dir, "state", "gate", "tokens.json"), filepath.Join(g.dir, "x.lock"), nil).List()
	if err != nil || len(entries) != 3 {
		t.Fatalf("entries %+v %v: want t1, t2, t3", entries, err)
	}
	if e := entries[0]; e.Token != got["token"] || !e.Expires.Equal(exp) {
		t.Errorf("stored t1 %+v, want expiry %v", e, exp)
	}
	if e := entries[1]; e.Task != "t2" || e.Expires.IsZero() || time.Until(e.Expires) > 91*time.Minute {
		t.Errorf("stored t2 %+v", e)
	}
	if e := entries[2]; e.Task != "t3" || !e.Expires.IsZero() {
		t.Errorf("stored t3 %+v", e)
	}
	code, out, _ = g.run("gate", "token", "list")
	if code != 0 || !strings.Contains(out, "EXPIRES") || !strings.Contains(out, got["expires"]) {
		t.Fatalf("list: %d %q", code, out)
	}
	code, out, _ = g.run("gate", "token", "list", "--json")
	var rows []map[string]string
	if code != 0 || json.Unmarshal([]byte(out), &rows) != nil || len(rows) != 3 || rows[0]["expires"] != got["expires"] || rows[2]["expires"] != "" {
		t.Fatalf("list --json: %d %q", code, out)
	}
}

// gate token create --container binds the token (members container and
// bound_at, docs/formats.md, Gate tokens file); a name that breaks the name
// rule exits 2 with an example and issues nothing.
func TestGateTokenContainer(t *testing.T) {
	g := newGateCLI(t)
	before := time.Now()
	code, out, errs := g.run("gate", "token", "create", "proj", "t1", "--container", "proj-t1", "--json")
	var got map[string]string
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil || got["container"] != "proj-t1" {
		t.Fatalf("--container: %d %q %q", code, out, errs)
	}
	for _, bad := range []string{"../x", "-x", "a/b"} {
		code, out, errs := g.run("gate", "token", "create", "proj", "bad", "--container", bad)
		if code != ExitUsage || out != "" || !strings.Contains(errs, "--container") {
			t.Errorf("--container %q: exit %d %q %q", bad, code, out, errs)
		}
	}
	entries, err := gatetokens.Open(filepath.Join(g.dir, "state", "gate", "tokens.json"), filepath.Join(g.dir, "x.lock"), nil).List()
	if err != nil || len(entries) != 1 {
		t.Fatalf("entries %+v %v: want t1 only", entries, err)
	}
	if e := entries[0]; e.Container != "proj-t1" || e.BoundAt.Before(before) || time.Since(e.BoundAt) > time.Minute {
		t.Errorf("stored %+v, want container proj-t1 bound now", e)
	}
}
