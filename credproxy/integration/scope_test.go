package integration

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"

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
	if !strings.Contains(e.log()+e.stderr.String(), "outside the route's scope") {
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
