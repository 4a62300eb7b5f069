package creddb

import (
	"context"
	"errors"
	"path/filepath"
	"terok.dev/sandbox/common/names"
	"testing"
	"time"

	"terok.dev/sandbox/common/taskend"
)

// A token bound to a container is refused by Resolve and by a Resolver
// (also on a cache hit, since an end is no database write) once the
// container's end is recorded; unbound tokens and a binding made after the
// end live; revocation drops the binding row; a handle without a watcher
// refuses every bound token (docs/formats.md, Credentials database).
func TestTokenBinding(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := Open(filepath.Join(dir, "credentials.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ends := filepath.Join(dir, "task-ends")
	if err := db.StoreCredential(ctx, CredentialKey{Set: DefaultSet, Provider: "gh"}, Credential{"type": "pat", "token": "x"}); err != nil {
		t.Fatal(err)
	}
	mk := func(task, container string) string {
		tok, err := db.CreateToken(ctx, TokenSpec{Project: "p", Task: task, Provider: "gh", Set: DefaultSet, Container: container})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	bound, free := mk("t1", "p-t1"), mk("t2", "")
	if _, _, err := db.Resolve(ctx, bound); !errors.Is(err, ErrTaskGone) {
		t.Fatalf("no watcher: bound token resolved (%v)", err)
	}
	db.SetTaskEnds(taskend.NewWatcher(ends, nil))
	res := db.NewResolver()
	defer res.Close()
	for name, r := range map[string]interface {
		Resolve(context.Context, string) (TokenInfo, Credential, error)
	}{"db": db, "resolver": res} {
		if ti, _, err := r.Resolve(ctx, bound); err != nil || ti.Container != "p-t1" || ti.BoundAt.IsZero() {
			t.Fatalf("%s: live bound token: %+v %v", name, ti, err)
		}
	}
	ti, err := db.LookupToken(ctx, bound)
	if err != nil || ti.Container != "p-t1" || time.Since(ti.BoundAt) > time.Minute {
		t.Fatalf("LookupToken: %+v %v", ti, err)
	}
	if err := taskend.Record(ends, taskend.End{Container: "p-t1", Reason: taskend.ReasonStopped}); err != nil {
		t.Fatal(err)
	}
	for name, r := range map[string]interface {
		Resolve(context.Context, string) (TokenInfo, Credential, error)
	}{"db": db, "resolver": res} {
		if _, _, err := r.Resolve(ctx, bound); !errors.Is(err, ErrTaskGone) || !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: ended container's token: %v", name, err)
		}
		if _, _, err := r.Resolve(ctx, free); err != nil {
			t.Errorf("%s: unbound token: %v", name, err)
		}
	}
	rerun := mk("t1", "p-t1")
	if _, _, err := res.Resolve(ctx, rerun); err != nil {
		t.Fatalf("token bound after the end: %v", err)
	}
	if _, err := db.CreateToken(ctx, TokenSpec{Project: "p", Task: "t3", Provider: "gh", Set: DefaultSet, Container: "../x"}); err == nil {
		t.Fatal("bad container name accepted")
	}
	if n, err := db.RevokeTokens(ctx, names.TaskRef{Project: "p", Task: "t1"}); err != nil || n != 2 {
		t.Fatalf("revoke: %d %v", n, err)
	}
	var left int
	if err := db.x.Get(&left, `SELECT count(*) FROM token_binding`); err != nil || left != 0 {
		t.Fatalf("binding rows left after revoke: %d %v", left, err)
	}
}
