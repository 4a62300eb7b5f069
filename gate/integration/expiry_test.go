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
func TestTokenExpiry(t *testing.T) {
	f := newFixture(t)
	now := time.Now()
	soonAt := time.Unix(now.Add(2*time.Second).Unix(), 0)
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
	f.git("", "clone", "-q", g.url(soon, "proj.git"), filepath.Join(f.dir, "soon"))
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
}
