package creddb

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"terok.dev/sandbox/common/names"
	"testing"

	"terok.dev/sandbox/common/scope"
)

// A token's own scope (docs/formats.md, Credentials database): stored in
// token_scope, returned by LookupToken and both Resolve paths, removed with
// the task's tokens; a row that does not parse is ErrBadScope (the proxy
// then refuses the token); a bad rule is refused at creation.
func TestTokenScope(t *testing.T) {
	ctx := context.Background()
	db, err := Open(filepath.Join(t.TempDir(), "credentials.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.StoreCredential(ctx, CredentialKey{Set: DefaultSet, Provider: "claude"}, Credential{"type": "api_key", "key": "k"}); err != nil {
		t.Fatal(err)
	}
	allow := []scope.Rule{{Methods: []string{"GET"}, Path: "/v1/models"}, {Methods: []string{"POST"}, Path: "/v1/messages"}}
	deny := []scope.Rule{{Methods: []string{"*"}, Path: "/v1/messages/batches/**"}}
	scoped, err := db.CreateToken(ctx, TokenSpec{Project: "p", Task: "t", Set: DefaultSet, Provider: "claude", Allow: allow, Deny: deny})
	if err != nil {
		t.Fatal(err)
	}
	denyOnly, err := db.CreateToken(ctx, TokenSpec{Project: "p", Task: "t", Set: DefaultSet, Provider: "claude", Deny: deny})
	if err != nil {
		t.Fatal(err)
	}
	open, err := db.CreateToken(ctx, TokenSpec{Project: "p", Task: "t", Set: DefaultSet, Provider: "claude"})
	if err != nil {
		t.Fatal(err)
	}
	var raw string
	if err := db.x.Get(&raw, `SELECT allow || ' ' || deny FROM token_scope WHERE token = ?`, denyOnly); err != nil ||
		raw != `[] [{"methods":["*"],"path":"/v1/messages/batches/**"}]` {
		t.Fatalf("token_scope row = %q %v", raw, err)
	}
	if ti, err := db.LookupToken(ctx, scoped); err != nil || !reflect.DeepEqual(ti.Allow, allow) || !reflect.DeepEqual(ti.Deny, deny) {
		t.Fatalf("LookupToken = %+v %v", ti, err)
	}
	res := db.NewResolver()
	defer res.Close()
	checks := []struct {
		tok, method, path string
		want              bool
	}{
		{scoped, "GET", "/v1/models", true},
		{scoped, "POST", "/v1/messages", true},
		{scoped, "GET", "/v1/messages", false},
		{scoped, "POST", "/v1/messages/batches/x", false},
		{denyOnly, "DELETE", "/anything", true},
		{denyOnly, "GET", "/v1/messages/batches", false},
		{open, "DELETE", "/anything", true},
	}
	for name, resolve := range map[string]func(context.Context, string) (TokenInfo, Credential, error){"DB": db.Resolve, "Resolver": res.Resolve} {
		for _, c := range checks {
			for range 2 { // the second call is the Resolver's cache hit
				ti, cred, err := resolve(ctx, c.tok)
				if err != nil || cred == nil {
					t.Fatalf("%s: resolve: %v", name, err)
				}
				if got := ti.Scope.Allowed(c.method, c.path); got != c.want {
					t.Errorf("%s: %s %s with token scope %+v/%+v = %v, want %v", name, c.method, c.path, ti.Allow, ti.Deny, got, c.want)
				}
			}
		}
	}

	// A row another tool wrote badly: refused, never widened to the route.
	for _, bad := range [][2]string{{`not json`, `[]`}, {`[]`, `{}`}, {`[{"methods":[],"path":"/x"}]`, `[]`}, {`[{"methods":["GET"],"path":"x"}]`, `[]`}} {
		if _, err := db.x.Exec(`UPDATE token_scope SET allow = ?, deny = ? WHERE token = ?`, bad[0], bad[1], scoped); err != nil {
			t.Fatal(err)
		}
		for name, resolve := range map[string]func(context.Context, string) (TokenInfo, Credential, error){"DB": db.Resolve, "Resolver": res.Resolve} {
			ti, cred, err := resolve(ctx, scoped)
			if !errors.Is(err, ErrBadScope) || cred != nil || ti.Provider != "claude" || strings.Contains(err.Error(), scoped) {
				t.Errorf("%s: malformed row %q: %+v %v %v", name, bad, ti, cred, err)
			}
		}
		if _, err := db.LookupToken(ctx, scoped); !errors.Is(err, ErrBadScope) {
			t.Errorf("LookupToken with malformed row %q: %v", bad, err)
		}
	}

	if _, err := db.CreateToken(ctx, TokenSpec{Project: "p", Task: "t", Set: DefaultSet, Provider: "claude",
		Allow: []scope.Rule{{Methods: []string{"get"}, Path: "/v1"}}}); err == nil || !strings.Contains(err.Error(), "allow[0]") {
		t.Errorf("bad rule accepted: %v", err)
	}
	if n, err := db.RevokeTokens(ctx, names.TaskRef{Project: "p", Task: "t"}); err != nil || n != 3 {
		t.Fatalf("revoke: %d %v", n, err)
	}
	var left int
	if err := db.x.Get(&left, `SELECT count(*) FROM token_scope`); err != nil || left != 0 {
		t.Fatalf("scope rows left: %d %v", left, err)
	}
}
