package creddb

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"terok.dev/sandbox/common/names"
	"testing"

	"terok.dev/sandbox/common/internal/proctest"
)

const resolverTok = "terok-p-0123456789abcdef0123456789abcdef"

// resolverFixture is a database with one token for default/claude and its
// API-key credential, written with raw SQL.
func resolverFixture(t testing.TB) (*DB, string, *Resolver) {
	db, path := openTemp(t)
	for _, q := range []string{
		`INSERT INTO credentials VALUES ('default', 'claude', '{"type": "api_key", "key": "k1"}')`,
		`INSERT INTO credentials VALUES ('default', 'gh', '{"type": "pat", "token": "g1"}')`,
		`INSERT INTO proxy_tokens VALUES ('` + resolverTok + `', 'proj', 'task', 'default', 'claude')`,
	} {
		if _, err := db.x.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	r := db.NewResolver()
	t.Cleanup(func() { r.Close() })
	return db, path, r
}

// writer makes a change the way one kind of client would.
type writer struct {
	name  string
	write func(t *testing.T, db *DB, path, stmt string)
}

var writers = []writer{
	{"other process", func(t *testing.T, _ *DB, path, stmt string) {
		proctest.Run(t, 1, "sql", "DB_PATH="+path, "SQL_STMT="+stmt)
	}},
	{"other handle", func(t *testing.T, _ *DB, path, stmt string) {
		other, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		if _, err := other.x.Exec(stmt); err != nil {
			t.Fatal(err)
		}
	}},
	// A raw statement on the same handle's pool bypasses the write
	// counter: data_version alone must catch it.
	{"same handle raw", func(t *testing.T, db *DB, _, stmt string) {
		if _, err := db.x.Exec(stmt); err != nil {
			t.Fatal(err)
		}
	}},
}

// Every kind of change, made by another process, another handle or the
// same handle between two calls, is seen by the very next call, although
// the first answer was cached.
func TestResolverSeesChangesOnTheNextCall(t *testing.T) {
	cases := []struct {
		name  string
		stmt  string
		check func(info TokenInfo, c Credential, err error) string
	}{
		{"revoked", `DELETE FROM proxy_tokens WHERE token = '` + resolverTok + `'`,
			func(_ TokenInfo, _ Credential, err error) string {
				if !errors.Is(err, ErrNotFound) {
					return fmt.Sprintf("err = %v, want ErrNotFound", err)
				}
				return ""
			}},
		{"credential changed", `UPDATE credentials SET data = '{"type": "api_key", "key": "k2"}' WHERE provider = 'claude'`,
			func(_ TokenInfo, c Credential, err error) string {
				if err != nil || c.String("key") != "k2" {
					return fmt.Sprintf("key = %q, %v; want k2", c.String("key"), err)
				}
				return ""
			}},
		{"credential deleted", `DELETE FROM credentials WHERE provider = 'claude'`,
			func(info TokenInfo, c Credential, err error) string {
				if err != nil || c != nil || info.Provider != "claude" {
					return fmt.Sprintf("got %+v %v %v; want the token without credential", info, c, err)
				}
				return ""
			}},
		{"token re-pointed", `UPDATE proxy_tokens SET provider = 'gh'`,
			func(info TokenInfo, c Credential, err error) string {
				if err != nil || info.Provider != "gh" || c.String("token") != "g1" {
					return fmt.Sprintf("got %+v %v %v; want gh", info, c, err)
				}
				return ""
			}},
		{"credential broken", `UPDATE credentials SET data = '[1]' WHERE provider = 'claude'`,
			func(_ TokenInfo, c Credential, err error) string {
				if err == nil || c != nil {
					return fmt.Sprintf("got %v %v; want an error", c, err)
				}
				return ""
			}},
	}
	ctx := context.Background()
	for _, w := range writers {
		for _, tc := range cases {
			t.Run(w.name+"/"+tc.name, func(t *testing.T) {
				db, path, r := resolverFixture(t)
				for i := 0; i < 2; i++ { // the second answer comes from the cache
					if _, c, err := r.Resolve(ctx, resolverTok); err != nil || c.String("key") != "k1" {
						t.Fatalf("before: %v %v", c, err)
					}
				}
				w.write(t, db, path, tc.stmt)
				info, c, err := r.Resolve(ctx, resolverTok)
				if msg := tc.check(info, c, err); msg != "" {
					t.Error(msg)
				}
			})
		}
	}
}

// The handle's own writes (revocation, the OAuth refresh's
// compare-and-swap) act on the next call too.
func TestResolverSeesOwnWrites(t *testing.T) {
	ctx := context.Background()
	t.Run("revoke", func(t *testing.T) {
		db, _, r := resolverFixture(t)
		_, _, _ = r.Resolve(ctx, resolverTok)
		if n, err := db.RevokeTokens(ctx, names.TaskRef{Project: "proj", Task: "task"}); err != nil || n != 1 {
			t.Fatalf("revoke: %d %v", n, err)
		}
		if _, _, err := r.Resolve(ctx, resolverTok); !errors.Is(err, ErrNotFound) {
			t.Errorf("err = %v, want ErrNotFound", err)
		}
	})
	t.Run("compare-and-swap", func(t *testing.T) {
		db, _, r := resolverFixture(t)
		_, old, _ := r.Resolve(ctx, resolverTok)
		next := Credential{"type": "api_key", "key": "k3"}
		if ok, err := db.UpdateCredential(ctx, CredentialKey{Set: DefaultSet, Provider: "claude"}, old, next); err != nil || !ok {
			t.Fatalf("update: %v %v", ok, err)
		}
		if _, c, err := r.Resolve(ctx, resolverTok); err != nil || c.String("key") != "k3" {
			t.Errorf("got %v %v, want k3", c, err)
		}
	})
	t.Run("new token", func(t *testing.T) {
		db, _, r := resolverFixture(t)
		_, _, _ = r.Resolve(ctx, resolverTok)
		tok, err := db.CreateToken(ctx, TokenSpec{Project: "proj", Task: "t2", Set: DefaultSet, Provider: "gh"})
		if err != nil {
			t.Fatal(err)
		}
		if info, c, err := r.Resolve(ctx, tok); err != nil || info.Task != "t2" || c.String("token") != "g1" {
			t.Errorf("got %+v %v %v", info, c, err)
		}
	})
}

// Many goroutines resolve in a loop while changes land from another
// process and another handle: no call that starts after a change
// committed may return the state before it.
func TestResolverConcurrentFreshness(t *testing.T) {
	ctx := context.Background()
	// The states in order: rotations to k2..k4, then the revocation.
	states := []string{"k1", "k2", "k3", "k4", "revoked"}
	stateOf := func(c Credential, err error) int {
		if errors.Is(err, ErrNotFound) {
			return len(states) - 1
		}
		for i, s := range states {
			if err == nil && c.String("key") == s {
				return i
			}
		}
		return -1
	}
	for _, w := range writers[:2] {
		t.Run(w.name, func(t *testing.T) {
			db, path, r := resolverFixture(t)
			var committed atomic.Int64 // index of the last committed state
			var stop atomic.Bool
			var calls, stale atomic.Int64
			var wg sync.WaitGroup
			for g := 0; g < 8; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for !stop.Load() {
						want := committed.Load()
						c0, err := resolveCred(ctx, r)
						calls.Add(1)
						// The next state may already be visible (it commits
						// before committed moves), never an older one.
						if got := stateOf(c0, err); got < int(want) {
							stale.Add(1)
							t.Errorf("state %d (%v %v) after state %d committed", got, c0, err, want)
						}
					}
				}()
			}
			for i := 1; i < len(states); i++ {
				stmt := `UPDATE credentials SET data = '{"type": "api_key", "key": "` + states[i] + `"}' WHERE provider = 'claude'`
				if states[i] == "revoked" {
					stmt = `DELETE FROM proxy_tokens`
				}
				w.write(t, db, path, stmt)
				committed.Store(int64(i))
			}
			// Let the goroutines make calls after the revocation.
			for start := calls.Load(); calls.Load() < start+100; {
				if _, _, err := r.Resolve(ctx, resolverTok); !errors.Is(err, ErrNotFound) {
					t.Fatalf("after revocation: %v", err)
				}
				calls.Add(1)
			}
			stop.Store(true)
			wg.Wait()
			if stale.Load() > 0 {
				t.Errorf("%d of %d calls returned stale state", stale.Load(), calls.Load())
			}
		})
	}
}

func resolveCred(ctx context.Context, r *Resolver) (Credential, error) {
	_, c, err := r.Resolve(ctx, resolverTok)
	return c, err
}

// Unknown tokens are not cached, and a token created by another process
// later is found.
func TestResolverUnknownToken(t *testing.T) {
	ctx := context.Background()
	_, path, r := resolverFixture(t)
	const other = "terok-p-ffffffffffffffffffffffffffffffff"
	for i := 0; i < 2; i++ {
		if _, _, err := r.Resolve(ctx, other); !errors.Is(err, ErrNotFound) {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
	}
	proctest.Run(t, 1, "sql", "DB_PATH="+path,
		"SQL_STMT=INSERT INTO proxy_tokens VALUES ('"+other+"', 'p', 't', 'default', 'gh')")
	if info, _, err := r.Resolve(ctx, other); err != nil || info.Provider != "gh" {
		t.Errorf("got %+v %v", info, err)
	}
	if len(r.cache) != 1 {
		t.Errorf("cache holds %d entries, want 1", len(r.cache))
	}
}

// The resolver agrees with DB.Resolve on the spec's rows, and a closed
// resolver refuses.
func TestResolverMatchesResolve(t *testing.T) {
	ctx := context.Background()
	db, _, r := resolverFixture(t)
	if _, err := db.x.Exec(`INSERT INTO proxy_tokens VALUES ('terok-p-00000000000000000000000000000001', 'p', 't', 'none', 'x')`); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{resolverTok, "terok-p-00000000000000000000000000000001", "terok-p-nope"} {
		wi, wc, werr := db.Resolve(ctx, tok)
		gi, gc, gerr := r.Resolve(ctx, tok)
		if !reflect.DeepEqual(wi, gi) || fmt.Sprint(wc) != fmt.Sprint(gc) || (werr == nil) != (gerr == nil) || errors.Is(werr, ErrNotFound) != errors.Is(gerr, ErrNotFound) {
			t.Errorf("%s: resolver %+v %v %v, db %+v %v %v", tok, gi, gc, gerr, wi, wc, werr)
		}
	}
	r.Close()
	if _, _, err := r.Resolve(ctx, resolverTok); err == nil {
		t.Error("closed resolver answered")
	}
}

// The resolver's connection cannot write: every change comes from another
// connection and therefore moves data_version.
func TestResolverConnectionIsReadOnly(t *testing.T) {
	_, _, r := resolverFixture(t)
	if _, _, err := r.Resolve(context.Background(), resolverTok); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := r.conn.Exec(`DELETE FROM proxy_tokens`, nil); err == nil {
		t.Error("the resolver connection wrote")
	}
}

// BenchmarkResolver is a cache hit: data_version check and map lookup.
func BenchmarkResolver(b *testing.B) {
	_, _, r := resolverFixture(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, c, err := r.Resolve(ctx, resolverTok); err != nil || c == nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkResolveRaw is BenchmarkResolver's fixture through DB.Resolve,
// for comparison.
func BenchmarkResolveRaw(b *testing.B) {
	db, _, _ := resolverFixture(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, c, err := db.Resolve(ctx, resolverTok); err != nil || c == nil {
			b.Fatal(err)
		}
	}
}
