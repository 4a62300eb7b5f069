package mirror

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

type env struct {
	t        *testing.T
	dir      string
	upstream string
	work     string
	environ  []string
}

func newEnv(t *testing.T) *env {
	e := &env{t: t, dir: t.TempDir()}
	e.environ = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + e.dir, "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.invalid", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.invalid"}
	e.upstream = filepath.Join(e.dir, "upstream.git")
	e.work = filepath.Join(e.dir, "work")
	e.git("", "init", "-q", "--bare", "-b", "main", e.upstream)
	e.git("", "clone", "-q", e.upstream, e.work)
	e.commit("one")
	e.git(e.work, "push", "-q", "origin", "HEAD:main", "HEAD:b1", "HEAD:b2")
	return e
}

func (e *env) git(dir string, args ...string) string {
	e.t.Helper()
	if dir == "" {
		dir = e.dir
	}
	cmd := exec.Command("git", args...)
	cmd.Dir, cmd.Env = dir, e.environ
	out, err := cmd.CombinedOutput()
	if err != nil {
		e.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func (e *env) commit(msg string) string {
	if err := os.WriteFile(filepath.Join(e.work, "f"), []byte(msg), 0o644); err != nil {
		e.t.Fatal(err)
	}
	e.git(e.work, "add", ".")
	e.git(e.work, "commit", "-q", "-m", msg)
	return e.git(e.work, "rev-parse", "HEAD")
}

func (e *env) manager(opts ...func(*Options)) *Manager {
	o := Options{ProjectID: "proj", GatePath: filepath.Join(e.dir, "gate", "proj.git"), UpstreamURL: e.upstream,
		DefaultBranch: "main", SSHHostDir: filepath.Join(e.dir, "keys", "proj"), Environ: e.environ}
	for _, f := range opts {
		f(&o)
	}
	return New(o)
}

func TestSyncSelectedBranchesAndCompare(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	ctx := context.Background()
	res, err := m.Sync(ctx, nil, false)
	if err != nil || !res.Created || !res.Success || res.UpdatedBranches[0] != "all" {
		t.Fatalf("first sync: %+v %v", res, err)
	}
	mirror := filepath.Join(e.dir, "gate", "proj.git")
	// A task pushed a branch into the mirror.
	e.git(mirror, "update-ref", "refs/heads/task-1", e.git(mirror, "rev-parse", "refs/heads/main"))
	// Upstream moves main and b2.
	c2 := e.commit("two")
	e.git(e.work, "push", "-q", "origin", "HEAD:main", "HEAD:b2")

	st := m.Compare(ctx, "")
	if !st.IsStale || st.Error != nil || *st.UpstreamHead != c2 || st.CommitsBehind != nil && *st.CommitsBehind != 1 {
		t.Fatalf("compare before sync: %+v", st)
	}
	// The upstream commit is not fetched yet, so counts are unknown.
	if st.CommitsBehind != nil || st.CommitsAhead != nil {
		t.Fatalf("counts without the upstream commit: behind %v ahead %v", st.CommitsBehind, st.CommitsAhead)
	}

	res, err = m.Sync(ctx, []string{"main"}, false)
	if err != nil || res.Created || !res.Success || strings.Join(res.UpdatedBranches, ",") != "main" {
		t.Fatalf("selected sync: %+v %v", res, err)
	}
	if got := e.git(mirror, "rev-parse", "refs/heads/main"); got != c2 {
		t.Fatalf("main not updated: %s", got)
	}
	if got := e.git(mirror, "rev-parse", "refs/heads/b2"); got == c2 {
		t.Fatal("b2 was fetched although only main was selected")
	}
	e.git(mirror, "rev-parse", "refs/heads/task-1") // survives a selected sync

	st = m.Compare(ctx, "main")
	if st.IsStale || *st.CommitsBehind != 0 || *st.CommitsAhead != 0 || st.Error != nil {
		t.Fatalf("compare after sync: %+v", st)
	}
	// Mirror ahead of upstream (a task push on main) is counted.
	e.git(mirror, "update-ref", "refs/heads/b1", c2)
	st = m.Compare(ctx, "b1")
	if !st.IsStale || st.CommitsAhead == nil || *st.CommitsAhead != 1 || *st.CommitsBehind != 0 {
		t.Fatalf("compare ahead: %+v", st)
	}

	lc := m.LastCommit(ctx)
	if lc == nil || lc.Hash != c2 || lc.Message != "two" || lc.Author != "t" {
		t.Fatalf("last commit: %+v", lc)
	}

	// Full update prunes task branches that are not upstream (documented).
	res, _ = m.Sync(ctx, nil, false)
	if !res.Success {
		t.Fatalf("full sync: %+v", res)
	}
	if got := e.git(mirror, "rev-parse", "refs/heads/b2"); got != c2 {
		t.Fatalf("b2 after full sync: %s", got)
	}
}

func TestErrors(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	m := e.manager(func(o *Options) { o.UpstreamURL = "" })
	if _, err := m.Sync(ctx, nil, false); err == nil || err.Error() != "Project has no git.upstream_url configured" {
		t.Fatalf("no upstream: %v", err)
	}
	if r := m.SyncBranches(ctx, nil); r.Success || r.Errors[0] != "Gate not initialized" {
		t.Fatalf("uninitialized: %+v", r)
	}
	if st := m.Compare(ctx, "main"); *st.Error != "Gate not initialized" || st.IsStale {
		t.Fatalf("compare uninitialized: %+v", st)
	}
	if m.LastCommit(ctx) != nil {
		t.Fatal("last commit of a missing mirror")
	}
	m2 := e.manager(func(o *Options) { o.DefaultBranch = "" })
	if st := m2.Compare(ctx, ""); *st.Error != "No branch configured" {
		t.Fatalf("no branch: %+v", st)
	}
	m3 := e.manager(func(o *Options) { o.UpstreamURL = filepath.Join(e.dir, "missing.git") })
	if _, err := m3.Sync(ctx, nil, false); err == nil || !strings.HasPrefix(err.Error(), "git clone --mirror failed: ") {
		t.Fatalf("bad upstream: %v", err)
	}
	m4 := e.manager(func(o *Options) { o.Validate = func(string) error { return os.ErrPermission } })
	if _, err := m4.Sync(ctx, nil, false); err == nil {
		t.Fatal("validate callback ignored")
	}
	m5 := e.manager()
	if _, err := m5.Sync(ctx, nil, false); err != nil {
		t.Fatal(err)
	}
	if r := m5.SyncBranches(ctx, []string{"--upload-pack=evil"}); r.Success {
		t.Fatal("option-like branch accepted")
	}
	if r := m5.SyncBranches(ctx, []string{"nope"}); r.Success || !strings.HasPrefix(r.Errors[0], "fetch failed: ") {
		t.Fatalf("missing branch: %+v", r)
	}
	// Compare with an unreachable upstream.
	m6 := e.manager(func(o *Options) { o.UpstreamURL = filepath.Join(e.dir, "gone.git") })
	if st := m6.Compare(ctx, "main"); st.Error == nil || *st.Error != "Could not reach upstream" || st.GateHead == nil {
		t.Fatalf("unreachable upstream: %+v", st)
	}
	// force_reinit recreates the mirror.
	if r, err := m5.Sync(ctx, nil, true); err != nil || !r.Created {
		t.Fatalf("force reinit: %+v %v", r, err)
	}
}

func TestSSHEnv(t *testing.T) {
	e := newEnv(t)
	var logs bytes.Buffer
	lg := slog.New(slog.NewTextHandler(&logs, nil))
	base := []string{"PATH=/bin", "SSH_AUTH_SOCK=/run/agent"}
	keyDir := filepath.Join(e.dir, "keys", "my proj")
	m := New(Options{ProjectID: "proj", SSHHostDir: keyDir, Environ: base, Log: lg})
	env := strings.Join(m.SSHEnv(), "\n")
	if !strings.Contains(env, "GIT_SSH_COMMAND=ssh -o IdentitiesOnly=yes -o StrictHostKeyChecking=no\n") ||
		!strings.HasSuffix(env, "SSH_AUTH_SOCK=") || !strings.Contains(logs.String(), "id_ed25519_proj") {
		t.Fatalf("missing key, no host keys:\n%s\nlog: %s", env, logs.String())
	}
	if err := os.MkdirAll(keyDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(keyDir, "id_ed25519_proj"), []byte("k"), 0o600); err != nil {
		t.Fatal(err)
	}
	env = strings.Join(m.SSHEnv(), "\n")
	want := "GIT_SSH_COMMAND=ssh -o IdentitiesOnly=yes -o IdentityFile='" + filepath.Join(keyDir, "id_ed25519_proj") + "' -o StrictHostKeyChecking=no"
	if !strings.Contains(env, want) || !strings.HasSuffix(env, "SSH_AUTH_SOCK=") {
		t.Fatalf("with key:\n%s", env)
	}
	m2 := New(Options{ProjectID: "x", SSHHostDir: filepath.Join(e.dir, "none"), Environ: base, AllowHostKeys: true})
	if got := strings.Join(m2.SSHEnv(), "\n"); got != strings.Join(base, "\n") {
		t.Fatalf("allow_host_keys changed the env: %s", got)
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{"/a/b_c.d": "/a/b_c.d", "/a b": "'/a b'", "/it's": `'/it'\''s'`, "": "''"} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %q, want %q", in, got, want)
		}
	}
}
