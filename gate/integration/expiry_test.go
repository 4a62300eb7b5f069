package integration

import (
	"path/filepath"
	"strings"
	"terok.dev/sandbox/common/names"
	"testing"
	"time"
)

// TestTokenExpiry: real git against the gate binary. A token whose expires
// member has passed is refused like a revoked one (403), also one that
// worked while it was live, with no change of tokens.json in between; its
// audit record says reason expired with the project and task
// (docs/gate.md, Token expiry; docs/audit.md, Channel gate).
//
// The soon token must serve a whole clone before its stamp passes; under
// load a start-up and clone can outlast a short margin, so an attempt
// that ran past the stamp before the clone finished says nothing and is
// made again in a fresh fixture with twice the margin (the margin is a
// liveness bound; the refusal after the stamp is checked every time).
func TestTokenExpiry(t *testing.T) {
	for margin := 2 * time.Second; !tokenExpiry(t, margin); margin *= 2 {
		if margin >= 32*time.Second {
			t.Fatalf("a clone never finished within %s of the token's creation", margin)
		}
		t.Logf("the clone outlasted the soon token (%s); again with %s", margin, 2*margin)
	}
}

// tokenExpiry is one attempt of TestTokenExpiry with the soon token living
// at least margin; false when the clone with it could not finish in time.
func tokenExpiry(t *testing.T, margin time.Duration) bool {
	f := newFixture(t)
	now := time.Now()
	soonAt := time.Unix(now.Add(margin+time.Second).Unix(), 0) // whole seconds, at least margin away
	soon, err := f.store.CreateExpiring(names.TaskRef{Project: "proj", Task: "soon"}, soonAt)
	if err != nil {
		t.Fatal(err)
	}
	dead, err := f.store.CreateExpiring(names.TaskRef{Project: "proj", Task: "dead"}, now.Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	live, err := f.store.CreateExpiring(names.TaskRef{Project: "proj", Task: "live"}, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	g := f.startGate(nil)
	if out, err := f.tryGit("", "clone", "-q", g.url(soon, "proj.git"), filepath.Join(f.dir, "soon")); err != nil {
		if !time.Now().Before(soonAt) {
			return false
		}
		t.Fatalf("clone with a live token: %v\n%s", err, out)
	}
	if _, err := f.tryGit("", "ls-remote", g.url(dead, "proj.git")); err == nil {
		t.Fatal("expired token listed")
	}
	f.git("", "ls-remote", g.url(live, "proj.git"))
	time.Sleep(time.Until(soonAt.Add(200 * time.Millisecond)))
	if _, err := f.tryGit("", "ls-remote", g.url(soon, "proj.git")); err == nil {
		t.Fatal("token listed after its expiry")
	}
	f.git("", "ls-remote", g.url(live, "proj.git"))

	recs := f.records(t)
	got := strings.Join(summary(recs), "\n")
	want := strings.Join([]string{
		"ls-refs ok", "clone ok",
		"ls-refs refused expired",
		"ls-refs ok",
		"ls-refs refused expired",
		"ls-refs ok",
	}, "\n")
	if got != want {
		t.Fatalf("records:\n%s\nwant:\n%s", got, want)
	}
	for _, c := range []struct {
		i    int
		task string
	}{{2, "dead"}, {4, "soon"}} {
		r := recs[c.i]
		if r.Project != "proj" || r.Task != c.task || r.Fields["status"] != float64(403) {
			t.Errorf("record %d: project %q task %q status %v; want proj/%s 403", c.i, r.Project, r.Task, r.Fields["status"], c.task)
		}
	}
	return true
}
