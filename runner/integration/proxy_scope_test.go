package integration

import (
	"encoding/json"
	"strings"
	"testing"
)

// proxy token create --allow/--deny stores the token's scope (shown by
// proxy token show, also by prefix); malformed rules are usage errors
// (exit 2) with the value and an example, and create nothing.
func TestProxyTokenScopeCommands(t *testing.T) {
	p := newProxyCLI(t)
	out := p.ok("", "proxy", "token", "create", "proj", "t1", "--provider", "claude", "--ttl", "8h",
		"--allow", "GET /v1/models", "--allow", "GET,POST /v1/messages/**", "--deny", "* /v1/messages/batches/**", "--json")
	var created struct {
		Token string `json:"token"`
		Allow []struct {
			Methods []string `json:"methods"`
			Path    string   `json:"path"`
		} `json:"allow"`
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil || len(created.Allow) != 2 || created.Allow[1].Methods[1] != "POST" {
		t.Fatalf("create --json: %q %v", out, err)
	}
	tok := created.Token
	show := p.ok("", "proxy", "token", "show", tok[:14])
	for _, want := range []string{"Allow:           GET /v1/models", "Allow:           GET,POST /v1/messages/**",
		"Deny:            * /v1/messages/batches/**", "Provider:        claude", "Token:           " + tok[:12] + "…"} {
		if !strings.Contains(show, want) {
			t.Errorf("show lacks %q:\n%s", want, show)
		}
	}
	if strings.Contains(show, tok[12:]) {
		t.Errorf("show printed the token:\n%s", show)
	}
	var shown map[string]any
	if err := json.Unmarshal([]byte(p.ok("", "proxy", "token", "show", tok, "--json")), &shown); err != nil ||
		shown["token"] != tok[:12]+"…" || shown["expires"] == nil || len(shown["deny"].([]any)) != 1 {
		t.Errorf("show --json: %v %v", shown, err)
	}
	plain := strings.TrimSpace(p.ok("", "proxy", "token", "create", "proj", "t2", "--provider", "claude"))
	if show := p.ok("", "proxy", "token", "show", plain); !strings.Contains(show, "Scope:           the route's") || !strings.Contains(show, "never") {
		t.Errorf("show of an unscoped token:\n%s", show)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--allow", "GET"}, `--allow: rule "GET" is not "METHODS PATH"`},
		{[]string{"--allow", "get /v1"}, `method "get" is not an upper-case HTTP method`},
		{[]string{"--deny", "GET /v1/../x"}, `--deny: rule "GET /v1/../x": path "/v1/../x" has a dot segment`},
		{[]string{"--allow", "GET /v1/mod*"}, "'*' must be a whole segment"},
	} {
		args := append([]string{"proxy", "token", "create", "proj", "t3", "--provider", "claude"}, c.args...)
		code, out, errOut := p.sandbox("", args...)
		if code != 2 || !strings.Contains(errOut, c.want) || !strings.Contains(errOut, "example: 'GET /v1/models'") || out != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 with %q and an example", c.args, code, out, errOut, c.want)
		}
	}
	if list := p.ok("", "proxy", "token", "list"); strings.Contains(list, "t3") {
		t.Errorf("a refused create left a token:\n%s", list)
	}
	for _, c := range []struct{ arg, want string }{
		{"terok-p", "not a phantom token or a prefix"},
		{"terok-p-zzzzzz", "no phantom token starts with"},
		{"terok-p-", "not a phantom token or a prefix"},
	} {
		if code, _, errOut := p.sandbox("", "proxy", "token", "show", c.arg); code == 0 || !strings.Contains(errOut, c.want) {
			t.Errorf("show %q: exit %d %q", c.arg, code, errOut)
		}
	}
}
