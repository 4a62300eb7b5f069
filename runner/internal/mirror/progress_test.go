package mirror

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// With Progress set, clone, full update and selected fetch pass git's own
// progress meter through, and the full update is the same as remote update
// (a pruned fetch of every ref).
func TestSyncProgress(t *testing.T) {
	e := newEnv(t)
	var progress bytes.Buffer
	// file:// makes git transfer objects (a plain path is a local clone
	// without a meter).
	m := e.manager(func(o *Options) { o.Progress, o.UpstreamURL = &progress, "file://"+e.upstream })
	ctx := context.Background()
	steps := []struct {
		name     string
		branches []string
	}{{"clone", nil}, {"full update", nil}, {"selected fetch", []string{"main"}}}
	mirror := filepath.Join(e.dir, "gate", "proj.git")
	for _, s := range steps {
		progress.Reset()
		c := e.commit(s.name)
		e.git(e.work, "push", "-q", "origin", "HEAD:main", "HEAD:b1")
		if s.name == "full update" {
			// A task branch upstream does not have, on a commit the
			// mirror holds.
			e.git(mirror, "update-ref", "refs/heads/task-1", e.git(mirror, "rev-parse", "refs/heads/main"))
		}
		res, err := m.Sync(ctx, s.branches, false)
		if err != nil || !res.Success {
			t.Fatalf("%s: %+v %v", s.name, res, err)
		}
		if got := e.git(mirror, "rev-parse", "refs/heads/main"); got != c {
			t.Fatalf("%s: main %s want %s", s.name, got, c)
		}
		if !strings.Contains(progress.String(), "objects: 100%") {
			t.Fatalf("%s: no progress meter in %q", s.name, progress.String())
		}
		if s.name == "full update" {
			if out := e.git(mirror, "for-each-ref", "--format=%(refname)", "refs/heads/task-1"); out != "" {
				t.Fatalf("full update kept a branch upstream does not have: %q", out)
			}
		}
	}
}

func TestWithoutProgress(t *testing.T) {
	cases := []struct{ in, want string }{
		{"fatal: repository not found", "fatal: repository not found"},
		{"Cloning into bare repository 'x'...\nremote: Counting objects:  50% (1/2)\rremote: Counting objects: 100% (2/2), done.\nReceiving objects:  50% (1/2)\rReceiving objects: 100% (2/2), done.\nfatal: the remote end hung up",
			"Cloning into bare repository 'x'...\nfatal: the remote end hung up"},
		{"Resolving deltas: 100% (3/3)\r\nerror: x: 5% sure", "\nerror: x: 5% sure"},
	}
	for _, c := range cases {
		if got := withoutProgress(c.in); got != c.want {
			t.Errorf("%q:\n got %q\nwant %q", c.in, got, c.want)
		}
	}
}

// FuzzWithoutProgress: git's stderr never panics the filter, and what it
// keeps has no carriage return (no half-drawn meter reaches a message).
func FuzzWithoutProgress(f *testing.F) {
	f.Add("Receiving objects:  50% (1/2)\rReceiving objects: 100% (2/2), done.\nfatal: x")
	f.Add("plain error")
	f.Add("\r\r\n: %\rremote: : 1%")
	f.Fuzz(func(t *testing.T, s string) {
		if got := withoutProgress(s); strings.ContainsRune(s, '\r') && strings.ContainsRune(got, '\r') {
			t.Fatalf("%q kept a carriage return: %q", s, got)
		}
	})
}
