package integration

import (
	"path/filepath"
	"strings"
	"terok.dev/sandbox/common/names"
	"testing"
	"time"

	"terok.dev/sandbox/common/taskend"
)

// TestTokenDiesWithContainer: real git against the gate binary. A token
// bound to a container works until that container's end is recorded in the
// task-ends directory (default <base-path>/../task-ends), then it is refused
// (403) and audited as reason task-gone; a token bound to another container,
// an unbound one, and a token bound to the same name after the end (a new
// run) keep working (docs/gate.md, Tokens bound to a container).
func TestTokenDiesWithContainer(t *testing.T) {
	f := newFixture(t)
	bound, err := f.store.CreateBound(names.TaskRef{Project: "proj", Task: "t1"}, "proj-t1", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	other, err := f.store.CreateBound(names.TaskRef{Project: "proj", Task: "t2"}, "proj-t2", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	g := f.startGate(nil)
	f.git("", "clone", "-q", g.url(bound, "proj.git"), filepath.Join(f.dir, "c1"))
	if err := taskend.Record(filepath.Join(f.dir, "task-ends"), taskend.End{Container: "proj-t1", Reason: taskend.ReasonStopped}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.tryGit("", "ls-remote", g.url(bound, "proj.git")); err == nil {
		t.Fatal("token of an ended container listed")
	}
	f.git("", "ls-remote", g.url(other, "proj.git"))
	f.git("", "ls-remote", g.url(f.tokProj, "proj.git"))
	rerun, err := f.store.CreateBound(names.TaskRef{Project: "proj", Task: "t1"}, "proj-t1", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	f.git("", "ls-remote", g.url(rerun, "proj.git"))

	recs := f.records(t)
	got := strings.Join(summary(recs), "\n")
	want := strings.Join([]string{
		"ls-refs ok", "clone ok",
		"ls-refs refused task-gone",
		"ls-refs ok", "ls-refs ok", "ls-refs ok",
	}, "\n")
	if got != want {
		t.Fatalf("records:\n%s\nwant:\n%s", got, want)
	}
	r := recs[2]
	if r.Project != "proj" || r.Task != "t1" || r.Fields["status"] != float64(403) || r.Container != "proj-t1" || r.Fields["task_end"] != "stopped" {
		t.Errorf("refusal record: project %q task %q fields %v; want proj/t1 403 container proj-t1", r.Project, r.Task, r.Fields)
	}
}
