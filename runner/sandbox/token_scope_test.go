package sandbox_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/common/scope"
	"terok.dev/sandbox/runner/sandbox"
)

// PhantomTokenSpec.Allow/Deny reach credentials.db (the proxy's resolve
// path reads them back); a malformed rule is refused and creates nothing.
func TestCreatePhantomTokenScope(t *testing.T) {
	root := t.TempDir()
	cfg := config.Config{StateDir: filepath.Join(root, "state"), CredentialsDir: filepath.Join(root, "credentials")}
	sb := sandbox.New(cfg, sandbox.Options{Env: config.Env{Getenv: func(string) string { return "" }, Home: root, EUID: os.Geteuid()}})
	ctx := context.Background()
	get, err := scope.ParseRule("GET /v1/models")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := sb.CreatePhantomToken(ctx, sandbox.PhantomTokenSpec{Project: "demo", Task: "t1", Provider: "claude",
		Allow: []scope.Rule{get}, Deny: []scope.Rule{{Methods: []string{"*"}, Path: "/v1/models/private"}}})
	if err != nil {
		t.Fatal(err)
	}
	db, err := creddb.Open(cfg.CredentialsDB())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ti, err := db.LookupToken(ctx, tok)
	if err != nil || !ti.Scope.Allowed("GET", "/v1/models") || ti.Scope.Allowed("POST", "/v1/models") || ti.Scope.Allowed("GET", "/v1/models/private") {
		t.Fatalf("stored scope: %+v %v", ti, err)
	}
	_, err = sb.CreatePhantomToken(ctx, sandbox.PhantomTokenSpec{Project: "demo", Task: "t2", Provider: "claude",
		Allow: []scope.Rule{{Methods: []string{"GET"}, Path: "v1"}}})
	if err == nil || !strings.Contains(err.Error(), "does not start with /") {
		t.Fatalf("malformed rule: %v", err)
	}
	if rows, err := db.ListTokens(ctx, "demo"); err != nil || len(rows) != 1 {
		t.Fatalf("tokens after a refused create: %+v %v", rows, err)
	}
}
