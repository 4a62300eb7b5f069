package sandbox_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/common/quota"
	"terok.dev/sandbox/runner/sandbox"
)

// PhantomTokenSpec.Quota and Expires reach credentials.db; a negative
// limit is refused and creates nothing; an expired token is refused like
// a revoked one.
func TestCreatePhantomTokenQuotaAndExpiry(t *testing.T) {
	root := t.TempDir()
	cfg := config.Config{StateDir: filepath.Join(root, "state"), CredentialsDir: filepath.Join(root, "credentials")}
	sb := sandbox.New(cfg, sandbox.Options{Env: config.Env{Getenv: func(string) string { return "" }, Home: root, EUID: os.Geteuid()}})
	ctx := context.Background()
	size, err := quota.ParseSize("50MB")
	if err != nil {
		t.Fatal(err)
	}
	expires := time.Now().Add(8 * time.Hour).Truncate(time.Second).UTC()
	tok, err := sb.CreatePhantomToken(ctx, sandbox.PhantomTokenSpec{Project: "demo", Task: "t1", Provider: "claude",
		Quota: quota.Limits{MaxRequests: 100, MaxResponseBytes: size}, Expires: expires})
	if err != nil {
		t.Fatal(err)
	}
	db, err := creddb.Open(cfg.CredentialsDB())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ti, err := db.LookupToken(ctx, tok)
	if err != nil || ti.Quota == nil || ti.Quota.MaxRequests != 100 || ti.Quota.MaxResponseBytes != 50e6 || !ti.Expires.Equal(expires) {
		t.Fatalf("stored: %+v %v", ti, err)
	}
	if _, err := sb.CreatePhantomToken(ctx, sandbox.PhantomTokenSpec{Project: "demo", Task: "t2", Provider: "claude",
		Quota: quota.Limits{MaxRequests: -1}}); err == nil {
		t.Fatal("negative limit accepted")
	}
	old, err := sb.CreatePhantomToken(ctx, sandbox.PhantomTokenSpec{Project: "demo", Task: "t3", Provider: "claude",
		Expires: time.Now().Add(-time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.Resolve(ctx, old); !errors.Is(err, creddb.ErrExpired) || !errors.Is(err, creddb.ErrNotFound) {
		t.Fatalf("expired token: %v", err)
	}
	if rows, err := db.ListTokens(ctx, "demo"); err != nil || len(rows) != 2 {
		t.Fatalf("tokens: %+v %v", rows, err)
	}
}
