package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/common/sshkeys"
	"terok.dev/sandbox/common/testkit"
)

// sshEnv is an isolated home whose state and credentials roots the ssh
// commands use.
type sshEnv struct {
	home, state, creds string
}

func newSSHEnv(t *testing.T) *sshEnv {
	home := t.TempDir()
	return &sshEnv{home: home, state: filepath.Join(home, "state"), creds: filepath.Join(home, "creds")}
}

func (e *sshEnv) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	vars := map[string]string{
		"TEROK_SANDBOX_CONFIG_DIR": filepath.Join(e.home, "cfg"),
		"TEROK_SANDBOX_STATE_DIR":  e.state,
		"TEROK_CREDENTIALS_DIR":    e.creds,
	}
	env := testkit.Env(vars, os.Geteuid(), e.home)
	code := Run(append([]string{Program}, args...), Deps{Stdout: &out, Stderr: &errb, Env: env})
	return code, out.String(), errb.String()
}

func TestSSHCommands(t *testing.T) {
	e := newSSHEnv(t)
	if code, out, _ := e.run(t, "ssh", "list"); code != 0 || out != "No SSH keys registered.\n" {
		t.Fatalf("empty list: %d %q", code, out)
	}
	// ssh list: a missing file is "no keys" before the --project check.
	if code, out, _ := e.run(t, "ssh", "list", "--project", "nope"); code != 0 || out != "No SSH keys registered.\n" {
		t.Fatalf("list --project without a file: %d %q", code, out)
	}
	code, out, errs := e.run(t, "ssh", "init", "proj")
	if code != 0 || !strings.HasPrefix(out, "SSH directory initialized:\n  dir: ") || !strings.Contains(out, "Public key:\nssh-ed25519 ") {
		t.Fatalf("init: %d %q %q", code, out, errs)
	}
	keysJSON := filepath.Join(e.creds, "ssh-keys.json")
	km, err := sshkeys.Read(keysJSON)
	if err != nil || len(km["proj"]) != 1 || filepath.Base(km["proj"][0].PrivateKey) != "id_ed25519_proj" {
		t.Fatalf("init registration: %v %v", km, err)
	}
	code, out, errs = e.run(t, "ssh", "add-key", "proj", "--key-type", "rsa")
	if code != 0 || !strings.Contains(out, "SSH key generated for project 'proj':\n  name: key-1\n") ||
		!strings.Contains(out, "  comment: tk-side:proj:key-1\nPublic key (add as deploy key):\nssh-rsa ") {
		t.Fatalf("add-key: %d %q %q", code, out, errs)
	}
	code, out, _ = e.run(t, "ssh", "add-key", "proj", "--name", "bot", "--json")
	var ak map[string]string
	if code != 0 || json.Unmarshal([]byte(out), &ak) != nil || ak["name"] != "bot" || ak["comment"] != "tk-side:proj:bot" {
		t.Fatalf("add-key --json: %d %q", code, out)
	}
	// import a copy of the bot key into another project
	code, out, errs = e.run(t, "ssh", "import", "other", "--private-key", ak["private_key"])
	if code != 0 || !strings.Contains(out, "Copying private key: "+ak["private_key"]+"\n              → ") ||
		!strings.Contains(out, "Registered key for project 'other': "+filepath.Join(e.state, "ssh-keys", "other", "id_ed25519_bot")) {
		t.Fatalf("import: %d %q %q", code, out, errs)
	}
	code, out, _ = e.run(t, "ssh", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 5 || !strings.HasPrefix(lines[0], "PROJECT  KEY") || !strings.HasPrefix(lines[1], "other  ") {
		t.Fatalf("list: %d\n%s", code, out)
	}
	if code, _, errs := e.run(t, "ssh", "list", "--project", "nope"); code != ExitError || !strings.Contains(errs, "No keys registered for project 'nope'") {
		t.Fatalf("list unknown project: %d %q", code, errs)
	}
	code, out, _ = e.run(t, "ssh", "list", "--project", "proj", "--json")
	var rows []map[string]string
	if code != 0 || json.Unmarshal([]byte(out), &rows) != nil || len(rows) != 3 || rows[0]["key"] != "tk-main:proj" {
		t.Fatalf("list --json: %d %q", code, out)
	}

	// token create: an ssh-provider phantom token in the credentials DB.
	code, out, errs = e.run(t, "ssh", "token", "create", "proj", "task-1")
	tok := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(tok, "terok-p-") || errs != "" {
		t.Fatalf("token create: %d %q %q", code, out, errs)
	}
	db, err := creddb.Open(filepath.Join(e.creds, "credentials.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	info, err := db.LookupToken(context.Background(), tok)
	if err != nil || info.Provider != "ssh" || info.Project != "proj" || info.Task != "task-1" {
		t.Fatalf("stored token: %+v %v", info, err)
	}
	if _, _, errs := e.run(t, "ssh", "token", "create", "nokeys", "t"); !strings.Contains(errs, "has no registered SSH key") {
		t.Fatalf("no warning for a project without keys: %q", errs)
	}
}

func TestSSHCommandErrors(t *testing.T) {
	e := newSSHEnv(t)
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"ssh", "add-key", "p", "--key-type", "dsa"}, ExitUsage, "Unsupported --key-type. Use 'ed25519' or 'rsa'."},
		{[]string{"ssh", "add-key", "-bad"}, ExitUsage, ""},
		{[]string{"ssh", "add-key", "p_ok", "--name", "no digits 1"}, ExitError, "Invalid key name 'no digits 1'"},
		{[]string{"ssh", "add-key", ".p"}, ExitError, "Invalid project ID '.p'"},
		{[]string{"ssh", "add-key"}, ExitUsage, "missing argument PROJECT"},
		{[]string{"ssh", "import", "p"}, ExitUsage, "--private-key is required"},
		{[]string{"ssh", "import", "p", "--private-key", "/nonexistent/k"}, ExitError, "Private key not found: /nonexistent/k"},
		{[]string{"ssh", "init", "p", "--key-name", "config"}, ExitError, "collides with reserved filename"},
		{[]string{"ssh", "token", "create", "p"}, ExitUsage, "missing argument TASK"},
		{[]string{"ssh", "token", "create", "p", "../t"}, ExitUsage, `invalid task id "../t"`},
		{[]string{"ssh", "token", "create", "p/q", "t"}, ExitUsage, `invalid project id "p/q"`},
		{[]string{"ssh", "bogus"}, ExitUsage, ""},
	}
	for _, c := range cases {
		code, _, errs := e.run(t, c.args...)
		if code != c.code || !strings.Contains(errs, c.want) {
			t.Errorf("%v: code %d, stderr %q; want %d %q", c.args, code, errs, c.code, c.want)
		}
	}
	if code, out, _ := e.run(t, "ssh"); code != 0 || !strings.Contains(out, "add-key") {
		t.Fatalf("bare group: %d %q", code, out)
	}
	// An invalid ssh-keys.json is reported and left alone.
	os.MkdirAll(e.creds, 0o700)
	os.WriteFile(filepath.Join(e.creds, "ssh-keys.json"), []byte("{oops"), 0o600)
	if code, _, errs := e.run(t, "ssh", "list"); code != ExitError || !strings.Contains(errs, "Cannot read ") {
		t.Fatalf("invalid json list: %d %q", code, errs)
	}
	if code, _, errs := e.run(t, "ssh", "add-key", "p"); code != ExitError || !strings.Contains(errs, "not a valid ssh-keys.json") {
		t.Fatalf("invalid json add-key: %d %q", code, errs)
	}
	if b, _ := os.ReadFile(filepath.Join(e.creds, "ssh-keys.json")); string(b) != "{oops" {
		t.Fatal("invalid ssh-keys.json was modified")
	}
}

// Destinations (docs/ssh-agent.md, Destination-bound keys): set at creation,
// changed and lifted with `ssh restrict`, shown by `ssh list`; a bad pattern
// exits 2 with an example and writes nothing.
func TestSSHDestinations(t *testing.T) {
	e := newSSHEnv(t)
	keysJSON := filepath.Join(e.creds, "ssh-keys.json")
	const fp = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s"
	if code, out, errs := e.run(t, "ssh", "init", "proj", "--destination", "github.com"); code != 0 {
		t.Fatalf("init --destination: %d %q %q", code, out, errs)
	}
	// Flags after the positional argument, repeated.
	code, out, errs := e.run(t, "ssh", "add-key", "proj", "--name", "bot", "--destination", "*.example.org", "--destination", fp, "--json")
	var ak map[string]string
	if code != 0 || json.Unmarshal([]byte(out), &ak) != nil {
		t.Fatalf("add-key --destination: %d %q %q", code, out, errs)
	}
	km, err := sshkeys.Read(keysJSON)
	if err != nil || len(km["proj"]) != 2 || strings.Join(km["proj"][0].Destinations, " ") != "github.com" ||
		strings.Join(km["proj"][1].Destinations, " ") != "*.example.org "+fp {
		t.Fatalf("registered: %+v %v", km, err)
	}
	for _, bad := range [][]string{
		{"ssh", "add-key", "proj", "--destination", "bad host"},
		{"ssh", "add-key", "proj", "--destination", "SHA256:short"},
		{"ssh", "init", "p2", "--destination", "-oProxyCommand=x"},
		{"ssh", "init", "p3", "--no-register", "--destination", "github.com"},
		{"ssh", "restrict", "proj", "tk-main:proj"},
		{"ssh", "restrict", "proj", "tk-main:proj", "--clear", "--destination", "github.com"},
		{"ssh", "restrict", "proj", "tk-main:proj", "--destination", "a,b c"},
	} {
		code, _, errs := e.run(t, bad...)
		if code != 2 || !strings.Contains(errs, "destination") && !strings.Contains(errs, "--clear") {
			t.Errorf("%v: exit %d %q, want 2", bad, code, errs)
		}
	}
	if km2, _ := sshkeys.Read(keysJSON); len(km2["proj"]) != 2 || len(km2) != 1 {
		t.Fatalf("a refused command changed ssh-keys.json: %+v", km2)
	}
	code, out, _ = e.run(t, "ssh", "list")
	if code != 0 || !strings.Contains(out, "DESTINATIONS") || !strings.Contains(out, "github.com") || !strings.Contains(out, "*.example.org,"+fp) {
		t.Fatalf("list: %d\n%s", code, out)
	}
	if code, out, errs := e.run(t, "ssh", "restrict", "proj", "tk-side:proj:bot", "--clear"); code != 0 || !strings.Contains(out, "any host") {
		t.Fatalf("restrict --clear: %d %q %q", code, out, errs)
	}
	if code, out, errs := e.run(t, "ssh", "restrict", "proj", "id_ed25519_proj", "--destination", "gitlab.com"); code != 0 || !strings.Contains(out, "gitlab.com") {
		t.Fatalf("restrict by file name: %d %q %q", code, out, errs)
	}
	if code, _, errs := e.run(t, "ssh", "restrict", "proj", "nope", "--destination", "gitlab.com"); code != ExitError || !strings.Contains(errs, "no key") {
		t.Fatalf("restrict unknown key: %d %q", code, errs)
	}
	km, _ = sshkeys.Read(keysJSON)
	if strings.Join(km["proj"][0].Destinations, " ") != "gitlab.com" || km["proj"][1].Restricted() {
		t.Fatalf("after restrict: %+v", km["proj"])
	}
	code, out, _ = e.run(t, "ssh", "list", "--json")
	var rows []map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &rows) != nil || len(rows) != 2 || rows[0]["destinations"] == nil || rows[1]["destinations"] != nil {
		t.Fatalf("list --json: %d %s", code, out)
	}
}

// ssh token create --ttl and proxy token create --ttl store an expiry
// (docs/ssh-agent.md, Token expiry); a bad TTL exits 2 with an example and
// issues nothing.
func TestSSHTokenTTL(t *testing.T) {
	e := newSSHEnv(t)
	code, out, errs := e.run(t, "ssh", "token", "create", "proj", "t1", "--ttl", "8h", "--json")
	var got map[string]string
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil {
		t.Fatalf("--ttl 8h: %d %q %q", code, out, errs)
	}
	exp, err := time.Parse(time.RFC3339, got["expires"])
	if err != nil || time.Until(exp) < 7*time.Hour || time.Until(exp) > 9*time.Hour {
		t.Fatalf("expires %q %v", got["expires"], err)
	}
	db, err := creddb.Open(filepath.Join(e.creds, "credentials.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ti, err := db.LookupToken(context.Background(), got["token"])
	if err != nil || !ti.Expires.Equal(exp) {
		t.Fatalf("stored expiry %+v %v", ti, err)
	}
	for _, bad := range []string{"8", "8x", "30s", "-1h", "9000h", ""} {
		code, _, errs := e.run(t, "ssh", "token", "create", "proj", "t2", "--ttl="+bad)
		if bad == "" {
			continue // empty means no TTL
		}
		if code != 2 || !strings.Contains(errs, "--ttl") || !strings.Contains(errs, "e.g.") {
			t.Errorf("--ttl %q: exit %d %q", bad, code, errs)
		}
	}
	if rows, _ := db.ListTokens(context.Background(), "proj"); len(rows) != 2 {
		t.Fatalf("tokens %+v: want t1 and the empty-TTL t2 only", rows)
	}
	// Phantom tokens of the proxy take the same --ttl.
	code, out, errs = e.run(t, "proxy", "token", "create", "proj", "t3", "--provider", "claude", "--ttl", "90m", "--json")
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil || got["expires"] == "" {
		t.Fatalf("proxy token --ttl: %d %q %q", code, out, errs)
	}
	if ti, err := db.LookupToken(context.Background(), got["token"]); err != nil || ti.Expires.IsZero() || time.Until(ti.Expires) > 91*time.Minute {
		t.Fatalf("proxy token expiry %+v %v", ti, err)
	}
	if code, _, errs := e.run(t, "proxy", "token", "create", "proj", "t4", "--provider", "claude", "--ttl", "1d"); code != 2 || !strings.Contains(errs, "e.g.") {
		t.Fatalf("proxy token --ttl 1d: %d %q", code, errs)
	}
}

// ssh token create --container and proxy token create --container store the
// binding (token_binding, docs/formats.md, Credentials database); a bad name
// exits 2 and issues nothing.
func TestTokenContainerFlag(t *testing.T) {
	e := newSSHEnv(t)
	before := time.Now()
	for _, args := range [][]string{
		{"ssh", "token", "create", "proj", "t1", "--container", "proj-t1", "--json"},
		{"proxy", "token", "create", "proj", "t2", "--provider", "claude", "--container", "proj-t2", "--json"},
	} {
		code, out, errs := e.run(t, args...)
		var got map[string]string
		if code != 0 || json.Unmarshal([]byte(out), &got) != nil || got["container"] != args[len(args)-2] {
			t.Fatalf("%v: %d %q %q", args, code, out, errs)
		}
		db, err := creddb.Open(filepath.Join(e.creds, "credentials.db"))
		if err != nil {
			t.Fatal(err)
		}
		ti, err := db.LookupToken(context.Background(), got["token"])
		db.Close()
		if err != nil || ti.Container != args[len(args)-2] || ti.BoundAt.Before(before) {
			t.Fatalf("%v: stored %+v %v", args, ti, err)
		}
	}
	for _, args := range [][]string{
		{"ssh", "token", "create", "proj", "t3", "--container", "../x"},
		{"proxy", "token", "create", "proj", "t3", "--provider", "claude", "--container", "a/b"},
	} {
		if code, out, errs := e.run(t, args...); code != 2 || out != "" || !strings.Contains(errs, "--container") {
			t.Errorf("%v: %d %q %q", args, code, out, errs)
		}
	}
	db, err := creddb.Open(filepath.Join(e.creds, "credentials.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if rows, _ := db.ListTokens(context.Background(), "proj"); len(rows) != 2 {
		t.Fatalf("tokens %+v: want t1 and t2 only", rows)
	}
}
