package integration

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/common/testkit"
)

// TestScopeWithCurl: the real binary with a scoped route; curl (over TCP)
// gets through inside the scope and gets 403 JSON outside it, the upstream
// never sees the refused requests, and no secret lands in any output.
func TestScopeWithCurl(t *testing.T) {
	up := newUpstream(t)
	e := newEnv(t, routesJSON("scoped", fmt.Sprintf(`{"upstream": %q,
		"allow": [{"methods": ["GET"], "path": "/v1/models/**"}, {"methods": ["POST"], "path": "/v1/messages"}],
		"deny": [{"methods": ["*"], "path": "/v1/models/private/**"}]}`, up.origin())))
	e.cred("default", "scoped", `{"type": "api_key", "key": "`+e.secret("REAL-scoped-c0ffee")+`"}`)
	tk := e.token(tok(300), "default", "scoped")
	e.start()
	curl := func(method, path string) (string, string) {
		out, err := exec.Command("curl", "-sS", "--path-as-is", "-X", method, "-o", "-", "-w", "\n%{http_code}",
			"-H", "Authorization: Bearer "+tk, e.url(path)).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %s %s: %v %s", method, path, err, out)
		}
		s := string(out)
		i := strings.LastIndex(s, "\n")
		return s[i+1:], s[:i]
	}
	for _, c := range []struct{ method, path, want string }{
		{"GET", "/v1/models", "200"},
		{"GET", "/v1/models/a", "200"},
		{"POST", "/v1/messages", "200"},
		{"GET", "/v1/messages", "403"},
		{"GET", "/v1/models/private/x", "403"},
		{"GET", "/v1/models/../admin", "403"},
		{"GET", "/v1/models/%2e%2e/%2e%2e/admin", "403"},
		{"GET", "/v1/models/a%2Fb", "403"},
		{"GET", "/v1/models;x=1", "403"},
	} {
		before := up.count()
		code, body := curl(c.method, c.path)
		if code != c.want {
			t.Errorf("%s %s: %s, want %s (%s)", c.method, c.path, code, c.want, body)
			continue
		}
		if c.want == "403" {
			if up.count() != before {
				t.Errorf("%s %s: refused request was forwarded", c.method, c.path)
			}
			if !strings.Contains(body, `"error":"scope"`) || !strings.Contains(body, `"route":"scoped"`) {
				t.Errorf("%s %s: body %q", c.method, c.path, body)
			}
		}
	}
	if !strings.Contains(e.log()+e.stderr.String(), "outside the route's or the token's scope") {
		t.Errorf("no refusal log line:\n%s", e.log())
	}
	e.checkNoSecrets()
}

// TestScopeMalformedRefusesStart: a malformed rule stops the daemon at start.
func TestScopeMalformedRefusesStart(t *testing.T) {
	e := newEnv(t, routesJSON("bad", `{"upstream": "http://127.0.0.1:1", "allow": [{"methods": ["get"], "path": "/x"}]}`))
	out, err := exec.Command(binPath, "--socket-path="+e.sock, "--db-path="+e.dbPath, "--routes-file="+e.routes,
		fmt.Sprintf("--port=%d", testkit.FreePort(t))).CombinedOutput()
	if err == nil {
		t.Fatalf("proxy started with a malformed scope: %s", out)
	}
	if !strings.Contains(string(out)+e.log(), "malformed scope rule") {
		t.Errorf("no clear log line: %s\n%s", out, e.log())
	}
}

// TestTokenScopeWithCurl: a token's own rules (token_scope, written as
// docs/formats.md documents it) narrow its route's scope: a request must
// pass both, deny wins; another token of the same route keeps the route's
// scope; a token_scope row the proxy cannot parse refuses the token (fail
// closed, logged) instead of falling back to the route's wider scope.
func TestTokenScopeWithCurl(t *testing.T) {
	up := newUpstream(t)
	e := newEnv(t, routesJSON("scoped", fmt.Sprintf(`{"upstream": %q,
		"allow": [{"methods": ["GET", "POST"], "path": "/v1/**"}],
		"deny": [{"methods": ["*"], "path": "/v1/admin/**"}]}`, up.origin())))
	e.cred("default", "scoped", `{"type": "api_key", "key": "`+e.secret("REAL-tokscope-c0ffee")+`"}`)
	e.exec(creddb.ScopeSchema)
	narrow := e.token(tok(301), "default", "scoped")
	e.exec(`INSERT INTO token_scope (token, allow, deny) VALUES (?, ?, ?)`, narrow,
		`[{"methods":["GET"],"path":"/v1/models"},{"methods":["POST"],"path":"/v1/messages"},{"methods":["*"],"path":"/v1/admin/**"}]`,
		`[{"methods":["POST"],"path":"/v1/messages"}]`)
	wide := e.token(tok(302), "default", "scoped")
	broken := e.token(tok(303), "default", "scoped")
	e.exec(`INSERT INTO token_scope (token, allow, deny) VALUES (?, ?, ?)`, broken, `[{"methods":["get"],"path":"/v1/**"}]`, `[]`)
	e.start()
	curl := func(tk, method, path string) (string, string) {
		out, err := exec.Command("curl", "-sS", "--path-as-is", "-X", method, "-o", "-", "-w", "\n%{http_code}",
			"-H", "Authorization: Bearer "+tk, e.url(path)).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %s %s: %v %s", method, path, err, out)
		}
		s := string(out)
		i := strings.LastIndex(s, "\n")
		return s[i+1:], s[:i]
	}
	for _, c := range []struct{ tk, method, path, want string }{
		{narrow, "GET", "/v1/models", "200"},
		{narrow, "POST", "/v1/messages", "403"},   // the token's deny wins over its allow
		{narrow, "GET", "/v1/messages", "403"},    // the route allows it, the token does not
		{narrow, "GET", "/v1/admin/x", "403"},     // the token allows it, the route denies it
		{narrow, "DELETE", "/v1/models", "403"},   // outside both
		{narrow, "GET", "/v1/models/../x", "403"}, // the one matcher: dot segments refused
		{wide, "GET", "/v1/messages", "200"},
		{wide, "POST", "/v1/messages", "200"},
		{wide, "GET", "/v1/admin/x", "403"},
		{broken, "GET", "/v1/models", "403"},
	} {
		before := up.count()
		code, body := curl(c.tk, c.method, c.path)
		if code != c.want {
			t.Errorf("%s %s %s: %s, want %s (%s)", c.tk[:12], c.method, c.path, code, c.want, body)
			continue
		}
		if c.want == "403" {
			if up.count() != before {
				t.Errorf("%s %s: refused request was forwarded", c.method, c.path)
			}
			if !strings.Contains(body, `"error":"scope"`) || strings.Contains(body, c.tk) {
				t.Errorf("%s %s: body %q", c.method, c.path, body)
			}
		}
	}
	logs := e.log() + e.stderr.String()
	if !strings.Contains(logs, "token_scope row in the credentials database cannot be parsed") || !strings.Contains(logs, "terok-p-") {
		t.Errorf("no fail-closed log line:\n%s", logs)
	}
	e.checkNoSecrets()
}
