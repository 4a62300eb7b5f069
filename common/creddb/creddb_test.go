package creddb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"terok.dev/sandbox/common/names"
	"testing"
	"time"

	"terok.dev/sandbox/common/internal/proctest"
	"terok.dev/sandbox/common/tokenid"
)

func TestMain(m *testing.M) {
	proctest.Main(m, proctest.Workers{
		// sql runs SQL_STMT against DB_PATH from its own process and its
		// own SQLite connection, like the runner CLI does.
		"sql": func() error {
			raw, err := sql.Open("sqlite3", os.Getenv("DB_PATH")+"?_busy_timeout=5000")
			if err != nil {
				return err
			}
			defer raw.Close()
			_, err = raw.Exec(os.Getenv("SQL_STMT"))
			return err
		},
		"tokens": func() error {
			db, err := Open(os.Getenv("DB_PATH"))
			if err != nil {
				return err
			}
			defer db.Close()
			for i := 0; i < 100; i++ {
				if _, err := db.CreateToken(context.Background(), TokenSpec{Project: "proj", Task: fmt.Sprintf("w%s-%d", os.Getenv("WORKER_INDEX"), i), Set: DefaultSet, Provider: "claude"}); err != nil {
					return err
				}
			}
			return nil
		},
	})
}

func openTemp(t testing.TB) (*DB, string) {
	path := filepath.Join(t.TempDir(), "creds", "credentials.db")
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, path
}

// A database created with the spec's raw SQL by "another tool" reads back.
func TestReadsDatabaseWrittenFromSpec(t *testing.T) {
	path := filepath.Join(t.TempDir(), "credentials.db")
	raw, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	stmts := []string{
		`CREATE TABLE credentials (credential_set TEXT NOT NULL, provider TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (credential_set, provider))`,
		`CREATE TABLE proxy_tokens (token TEXT PRIMARY KEY, project TEXT NOT NULL, task TEXT NOT NULL, credential_set TEXT NOT NULL, provider TEXT NOT NULL)`,
		`INSERT INTO credentials VALUES ('default', 'claude', '{"type": "oauth", "access_token": "sk-a", "refresh_token": "rt-b", "expires_at": 1767225600.5, "extra": {"k": [1,2]}}')`,
		`INSERT INTO credentials VALUES ('default', 'gh', '{"type": "pat", "token": "ghp-x"}')`,
		`INSERT INTO credentials VALUES ('work', 'glab', '{"type": "api_key", "key": "k"}')`,
		`INSERT INTO proxy_tokens VALUES ('terok-p-0123456789abcdef0123456789abcdef', 'proj', '42', 'default', 'claude')`,
	}
	for _, s := range stmts {
		if _, err := raw.Exec(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	raw.Close()
	os.Chmod(path, 0o644)

	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	c, err := db.LoadCredential(ctx, CredentialKey{Set: "default", Provider: "claude"})
	if err != nil {
		t.Fatal(err)
	}
	if c.String("access_token") != "sk-a" || c.String("type") != "oauth" {
		t.Errorf("credential = %v", c)
	}
	if f, ok := c.Number("expires_at"); !ok || f != 1767225600.5 {
		t.Errorf("expires_at = %v %v", f, ok)
	}
	all, err := db.AllCredentials(ctx)
	if err != nil || len(all) != 3 || all[0].Set != "default" || all[0].Provider != "claude" || all[2].Set != "work" {
		t.Errorf("AllCredentials = %+v, %v", all, err)
	}
	names, err := db.ListCredentials(ctx, "default")
	if err != nil || len(names) != 2 || names[0] != "claude" || names[1] != "gh" {
		t.Errorf("List = %v, %v", names, err)
	}
	ti, err := db.LookupToken(ctx, "terok-p-0123456789abcdef0123456789abcdef")
	if err != nil || !reflect.DeepEqual(ti, TokenInfo{Project: "proj", Task: "42", CredentialSet: "default", Provider: "claude"}) {
		t.Errorf("LookupToken = %+v, %v", ti, err)
	}
	var mode string
	db.x.Get(&mode, "PRAGMA journal_mode")
	if mode != "wal" {
		t.Errorf("journal_mode = %q", mode)
	}
}

func TestCredentialRoundTrip(t *testing.T) {
	db, _ := openTemp(t)
	ctx := context.Background()
	if _, err := db.LoadCredential(ctx, CredentialKey{Set: "default", Provider: "x"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing row: %v", err)
	}
	in, _ := DecodeCredential([]byte(`{"type":"oauth","access_token":"a","expires_at":12345678901234567890,"opaque":{"x":1}}`))
	if err := db.StoreCredential(ctx, CredentialKey{Set: "default", Provider: "claude"}, in); err != nil {
		t.Fatal(err)
	}
	out, err := db.LoadCredential(ctx, CredentialKey{Set: "default", Provider: "claude"})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(out["expires_at"]) != "12345678901234567890" {
		t.Errorf("large number changed: %v", out["expires_at"])
	}
	// Replace, then delete twice (idempotent).
	if err := db.StoreCredential(ctx, CredentialKey{Set: "default", Provider: "claude"}, Credential{"type": "api_key", "key": "k2"}); err != nil {
		t.Fatal(err)
	}
	out, _ = db.LoadCredential(ctx, CredentialKey{Set: "default", Provider: "claude"})
	if out.String("key") != "k2" {
		t.Errorf("replace failed: %v", out)
	}
	for i := 0; i < 2; i++ {
		if err := db.DeleteCredential(ctx, CredentialKey{Set: "default", Provider: "claude"}); err != nil {
			t.Fatal(err)
		}
	}
	if names, _ := db.ListCredentials(ctx, "default"); len(names) != 0 {
		t.Errorf("left: %v", names)
	}
	if err := db.StoreCredential(ctx, CredentialKey{Set: "", Provider: "p"}, Credential{}); err == nil {
		t.Error("empty set accepted")
	}
}

func TestDecodeCredentialRejectsNonObjects(t *testing.T) {
	for _, s := range []string{`[]`, `"x"`, `null`, `{`, ``} {
		if _, err := DecodeCredential([]byte(s)); err == nil {
			t.Errorf("accepted %q", s)
		}
	}
}

func TestTokens(t *testing.T) {
	db, _ := openTemp(t)
	ctx := context.Background()
	a, err := db.CreateToken(ctx, TokenSpec{Project: "p", Task: "1", Set: DefaultSet, Provider: "claude"})
	if err != nil || !tokenid.Valid(tokenid.PhantomPrefix, a) {
		t.Fatalf("CreateToken = %q, %v", a, err)
	}
	db.CreateToken(ctx, TokenSpec{Project: "p", Task: "1", Set: DefaultSet, Provider: SSHProvider})
	db.CreateToken(ctx, TokenSpec{Project: "p", Task: "2", Set: DefaultSet, Provider: "claude"})
	if ti, err := db.LookupToken(ctx, a); err != nil || ti.Provider != "claude" {
		t.Fatalf("Lookup = %+v %v", ti, err)
	}
	if _, err := db.LookupToken(ctx, StaticMarker); !errors.Is(err, ErrNotFound) {
		t.Error("static marker must not be stored")
	}
	rows, _ := db.ListTokens(ctx, "p")
	if len(rows) != 3 {
		t.Errorf("ListTokens = %d", len(rows))
	}
	n, err := db.RevokeTokens(ctx, names.TaskRef{Project: "p", Task: "1"})
	if err != nil || n != 2 {
		t.Fatalf("Revoke = %d, %v", n, err)
	}
	if _, err := db.LookupToken(ctx, a); !errors.Is(err, ErrNotFound) {
		t.Error("revoked token still found")
	}
	for _, c := range []struct{ project, task, set, provider, want string }{
		{"", "1", DefaultSet, "x", "invalid project id"},
		{"../p", "1", DefaultSet, "x", "invalid project id"},
		{"p", "a/b", DefaultSet, "x", "invalid task id"},
		{"p", "-t", DefaultSet, "x", "invalid task id"},
		{"p", "", DefaultSet, "x", "invalid task id"},
		{"p", "1", "", "x", "credential set must not be empty"},
		{"p", "1", DefaultSet, "", "provider must not be empty"},
	} {
		if _, err := db.CreateToken(ctx, TokenSpec{Project: c.project, Task: c.task, Set: c.set, Provider: c.provider}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("CreateToken(%q, %q, %q, %q) = %v, want %q", c.project, c.task, c.set, c.provider, err, c.want)
		}
	}
	if rows, _ := db.ListTokens(ctx, ""); len(rows) != 1 {
		t.Errorf("rejected ids stored tokens: %v", rows)
	}
}

func TestResolve(t *testing.T) {
	db, _ := openTemp(t)
	ctx := context.Background()
	db.StoreCredential(ctx, CredentialKey{Set: DefaultSet, Provider: "claude"}, Credential{"type": "api_key", "key": "k"})
	db.x.MustExec(`INSERT INTO credentials VALUES ('default', 'broken', '[1]')`)
	withCred, _ := db.CreateToken(ctx, TokenSpec{Project: "p", Task: "1", Set: DefaultSet, Provider: "claude"})
	noCred, _ := db.CreateToken(ctx, TokenSpec{Project: "p", Task: "1", Set: DefaultSet, Provider: "gh"})
	broken, _ := db.CreateToken(ctx, TokenSpec{Project: "p", Task: "1", Set: DefaultSet, Provider: "broken"})

	ti, c, err := db.Resolve(ctx, withCred)
	if err != nil || ti.Provider != "claude" || c.String("key") != "k" {
		t.Errorf("Resolve = %+v %v %v", ti, c, err)
	}
	ti, c, err = db.Resolve(ctx, noCred)
	if err != nil || ti.Provider != "gh" || c != nil {
		t.Errorf("no credential: %+v %v %v", ti, c, err)
	}
	if _, _, err := db.Resolve(ctx, broken); err == nil {
		t.Error("non-object data accepted")
	}
	if _, _, err := db.Resolve(ctx, "terok-p-00000000000000000000000000000000"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown token: %v", err)
	}
	db.RevokeTokens(ctx, names.TaskRef{Project: "p", Task: "1"})
	if _, _, err := db.Resolve(ctx, withCred); !errors.Is(err, ErrNotFound) {
		t.Errorf("revoked token resolved: %v", err)
	}
}

func BenchmarkResolve(b *testing.B) {
	db, _ := openTemp(b)
	ctx := context.Background()
	db.StoreCredential(ctx, CredentialKey{Set: DefaultSet, Provider: "claude"}, Credential{"type": "oauth", "access_token": "a"})
	toks := make([]string, 1000)
	for i := range toks {
		toks[i], _ = db.CreateToken(ctx, TokenSpec{Project: "p", Task: fmt.Sprint(i), Set: DefaultSet, Provider: "claude"})
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := db.Resolve(ctx, toks[i%len(toks)]); err != nil {
			b.Fatal(err)
		}
	}
}

func TestUpdateCredentialIsCompareAndSwap(t *testing.T) {
	db, _ := openTemp(t)
	ctx := context.Background()
	old := Credential{"type": "oauth", "access_token": "a1", "refresh_token": "r1", "keep": "me"}
	db.StoreCredential(ctx, CredentialKey{Set: "default", Provider: "claude"}, old)
	loaded, _ := db.LoadCredential(ctx, CredentialKey{Set: "default", Provider: "claude"})
	next := Credential{}
	for k, v := range loaded {
		next[k] = v
	}
	next["access_token"] = "a2"
	ok, err := db.UpdateCredential(ctx, CredentialKey{Set: "default", Provider: "claude"}, loaded, next)
	if err != nil || !ok {
		t.Fatalf("Update = %v, %v", ok, err)
	}
	// A second update based on the stale copy must not win.
	stale := Credential{}
	for k, v := range loaded {
		stale[k] = v
	}
	stale["access_token"] = "a3"
	ok, err = db.UpdateCredential(ctx, CredentialKey{Set: "default", Provider: "claude"}, loaded, stale)
	if err != nil || ok {
		t.Fatalf("stale Update = %v, %v", ok, err)
	}
	cur, _ := db.LoadCredential(ctx, CredentialKey{Set: "default", Provider: "claude"})
	if cur.String("access_token") != "a2" || cur.String("keep") != "me" {
		t.Errorf("current = %v", cur)
	}
}

// 8 processes x 100 phantom tokens at once: all 800 land and a reader
// querying meanwhile never gets an error.
func TestConcurrentProcessesLoseNothing(t *testing.T) {
	db, path := openTemp(t)
	var stop atomic.Bool
	var reads, failures atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			var n int
			if err := db.x.Get(&n, `SELECT count(*) FROM proxy_tokens`); err != nil {
				failures.Add(1)
				t.Logf("reader: %v", err)
			}
			reads.Add(1)
		}
	}()
	proctest.Run(t, 8, "tokens", "DB_PATH="+path)
	stop.Store(true)
	wg.Wait()
	rows, err := db.ListTokens(context.Background(), "proj")
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 800 {
		t.Errorf("got %d tokens, want 800", len(rows))
	}
	if failures.Load() != 0 {
		t.Errorf("reader failed %d of %d times", failures.Load(), reads.Load())
	}
}

func BenchmarkCreateToken(b *testing.B) {
	db, _ := openTemp(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := db.CreateToken(ctx, TokenSpec{Project: "p", Task: fmt.Sprint(i), Set: DefaultSet, Provider: "claude"}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLookupToken(b *testing.B) {
	db, _ := openTemp(b)
	ctx := context.Background()
	toks := make([]string, 1000)
	for i := range toks {
		toks[i], _ = db.CreateToken(ctx, TokenSpec{Project: "p", Task: fmt.Sprint(i), Set: DefaultSet, Provider: "claude"})
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := db.LookupToken(ctx, toks[i%len(toks)]); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzDecodeCredential(f *testing.F) {
	f.Add([]byte(`{"type":"oauth","access_token":"x","expires_at":1.5}`))
	f.Add([]byte(`{"key": 1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := DecodeCredential(data)
		if err == nil {
			_ = c.String("type")
			c.Number("expires_at")
		}
	})
}

// Token expiry (docs/formats.md, Credentials database): stored in
// token_expiry, returned by LookupToken, enforced by Resolve, removed with
// the task's tokens; proxy_tokens keeps its DDL.
func TestTokenExpiry(t *testing.T) {
	ctx := context.Background()
	db, err := Open(filepath.Join(t.TempDir(), "credentials.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	exp := time.Now().Add(8 * time.Hour).Truncate(time.Second).UTC()
	tok, err := db.CreateToken(ctx, TokenSpec{Project: "p", Task: "t", Set: DefaultSet, Provider: SSHProvider, Expires: exp})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := db.CreateToken(ctx, TokenSpec{Project: "p", Task: "t2", Set: DefaultSet, Provider: SSHProvider})
	if err != nil {
		t.Fatal(err)
	}
	ti, err := db.LookupToken(ctx, tok)
	if err != nil || !ti.Expires.Equal(exp) || ti.Expired(exp.Add(-time.Second)) || !ti.Expired(exp) {
		t.Fatalf("LookupToken = %+v, %v", ti, err)
	}
	if ti, err := db.LookupToken(ctx, plain); err != nil || !ti.Expires.IsZero() || ti.Expired(time.Now().Add(1000*time.Hour)) {
		t.Fatalf("token without expiry: %+v %v", ti, err)
	}
	// Phantom tokens of the proxy: Resolve (and the caching Resolver, also
	// on a cache hit) refuses an expired one as ErrExpired, an ErrNotFound.
	if err := db.StoreCredential(ctx, CredentialKey{Set: DefaultSet, Provider: "claude"}, Credential{"type": "api_key", "key": "k"}); err != nil {
		t.Fatal(err)
	}
	live, err := db.CreateToken(ctx, TokenSpec{Project: "p", Task: "t", Set: DefaultSet, Provider: "claude", Expires: exp})
	if err != nil {
		t.Fatal(err)
	}
	dead, err := db.CreateToken(ctx, TokenSpec{Project: "p", Task: "t", Set: DefaultSet, Provider: "claude", Expires: time.Now().Add(-time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	res := db.NewResolver()
	defer res.Close()
	for name, resolve := range map[string]func(context.Context, string) (TokenInfo, Credential, error){"DB": db.Resolve, "Resolver": res.Resolve} {
		if ti, c, err := resolve(ctx, live); err != nil || c == nil || !ti.Expires.Equal(exp) {
			t.Fatalf("%s: live token: %+v %v %v", name, ti, c, err)
		}
		if ti, c, err := resolve(ctx, dead); !errors.Is(err, ErrExpired) || !errors.Is(err, ErrNotFound) || c != nil || !reflect.DeepEqual(ti, TokenInfo{}) {
			t.Fatalf("%s: expired token: %+v %v %v", name, ti, c, err)
		}
	}
	// A cached live entry whose stamp passes without any write. The stamp
	// is kept in whole seconds, so it is made at least margin away; an
	// attempt whose first Resolve came after it says nothing under load and
	// is made again with a new token and twice the margin (a liveness
	// bound: the refusal after the stamp is checked every time).
	tokens := int64(3) // tok, live, dead
	for margin := time.Second; ; margin *= 2 {
		soonAt := time.Unix(time.Now().Add(margin+time.Second).Unix(), 0)
		soon, err := db.CreateToken(ctx, TokenSpec{Project: "p", Task: "t", Set: DefaultSet, Provider: "claude", Expires: soonAt})
		if err != nil {
			t.Fatal(err)
		}
		tokens++
		if _, _, err := res.Resolve(ctx, soon); err != nil {
			if !time.Now().Before(soonAt) && margin < 16*time.Second {
				t.Logf("the first Resolve came after the stamp (%s); again with %s", margin, 2*margin)
				continue
			}
			t.Fatal(err)
		}
		time.Sleep(time.Until(soonAt.Add(100 * time.Millisecond)))
		if _, _, err := res.Resolve(ctx, soon); !errors.Is(err, ErrExpired) {
			t.Fatalf("cached token past its expiry: %v", err)
		}
		break
	}
	if n, err := db.RevokeTokens(ctx, names.TaskRef{Project: "p", Task: "t"}); err != nil || n != tokens {
		t.Fatalf("revoke: %d %v", n, err)
	}
	var left int
	if err := db.x.Get(&left, `SELECT count(*) FROM token_expiry`); err != nil || left != 0 {
		t.Fatalf("expiry rows left: %d %v", left, err)
	}
	var ddl string
	if err := db.x.Get(&ddl, `SELECT sql FROM sqlite_master WHERE name = 'proxy_tokens'`); err != nil || strings.Contains(ddl, "expire") {
		t.Fatalf("proxy_tokens changed: %s %v", ddl, err)
	}
}
