package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/common/gatepolicy"
)

// Hostile receive-pack command lists are answered 400 by the gate before
// git runs, and the mirror keeps its refs (docs/gate.md, Push commands).
func TestPushCommandListRefused(t *testing.T) {
	f := newFixture(t)
	g := f.startGate(nil)
	repo := f.base + "/proj.git"
	head := f.git(repo, "rev-parse", "refs/heads/main")
	zero := strings.Repeat("0", 40)
	for name, body := range map[string]string{
		"bad hex":       pkt("zz"+head[2:]+" "+head+" refs/heads/x\x00report-status\n") + "0000",
		"oversized pkt": "fff5" + strings.Repeat("x", 200),
		"bad length":    "00zz" + strings.Repeat("x", 200),
		"not a ref":     pkt(zero+" "+head+" HEAD\x00report-status\n") + "0000",
		"no flush":      pkt(zero + " " + head + " refs/heads/x\x00report-status\n"),
		"too many": func() string {
			var b strings.Builder
			for i := 0; i < 5000; i++ {
				b.WriteString(pkt(zero + " " + head + " refs/heads/b" + strconv.Itoa(i) + "\n"))
			}
			return b.String() + "0000"
		}(),
	} {
		t.Run(name, func(t *testing.T) {
			code, resp := raw(t, g.port, "POST /proj.git/git-receive-pack HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"+
				"Content-Type: application/x-git-receive-pack-request\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n"+basic(f.tokProj)+"\r\n"+body)
			if code != 400 || !strings.Contains(resp, "push command list:") {
				t.Fatalf("status %d, want 400 with the reason: %q", code, resp[:min(len(resp), 300)])
			}
		})
	}
	if refs := f.git(repo, "for-each-ref", "--format=%(refname)"); refs != "refs/heads/main" {
		t.Fatalf("mirror refs changed: %q", refs)
	}
}

// pushClone is a clone of proj.git through the gate with one new commit.
func (f *fixture) pushClone(t *testing.T, g *gate, tok string) string {
	t.Helper()
	dst := t.TempDir()
	f.git("", "clone", "-q", g.url(tok, "proj.git"), dst)
	f.commit(dst, "work")
	return dst
}

func (f *fixture) commit(dir, msg string) {
	f.t.Helper()
	if err := os.WriteFile(filepath.Join(dir, msg+".txt"), []byte(msg), 0o644); err != nil {
		f.t.Fatal(err)
	}
	f.git(dir, "add", ".")
	f.git(dir, "commit", "-q", "-m", msg)
}

func (f *fixture) mirrorRef(ref string) string {
	out, _ := f.tryGit(filepath.Join(f.base, "proj.git"), "rev-parse", "-q", "--verify", ref)
	return strings.TrimSpace(out)
}

// lastPush is the newest push record of the audit file.
func (f *fixture) lastPush(t *testing.T) audit.Record {
	t.Helper()
	recs := f.records(t)
	for i := len(recs) - 1; i >= 0; i-- {
		if recs[i].Event == "push" {
			return recs[i]
		}
	}
	t.Fatal("no push record")
	return audit.Record{}
}

// TestPushPolicy pushes with real git against the default policy and a
// namespace policy (docs/gate.md, Push policy).
func TestPushPolicy(t *testing.T) {
	f := newFixture(t)
	g := f.startGate(nil)
	main0 := f.mirrorRef("refs/heads/main")
	dst := f.pushClone(t, g, f.tokProj)
	refused := func(name, wantReason, wantOut string, args ...string) {
		t.Helper()
		out, err := f.tryGit(dst, append([]string{"push", "origin"}, args...)...)
		if err == nil {
			t.Fatalf("%s: push succeeded:\n%s", name, out)
		}
		if !strings.Contains(out, "remote: terok gate: push refused") && wantReason != "non-fast-forward" {
			t.Fatalf("%s: git shows no remote message:\n%s", name, out)
		}
		if !strings.Contains(out, wantOut) {
			t.Fatalf("%s: output lacks %q:\n%s", name, wantOut, out)
		}
		if r := f.lastPush(t); r.Outcome != "refused" || r.Reason != wantReason || r.Task != "1" {
			t.Fatalf("%s: audit record %+v, want refused %s", name, r, wantReason)
		}
	}

	refused("default branch", "protected-ref", "[remote rejected] HEAD -> main (protected-ref: refs/heads/main is protected)", "HEAD:refs/heads/main")
	if got := f.mirrorRef("refs/heads/main"); got != main0 {
		t.Fatalf("main moved to %s", got)
	}
	f.git(dst, "tag", "v1")
	refused("tag", "protected-ref", "refs/tags/v1 is protected", "refs/tags/v1")
	// Atomic: an allowed ref in the same push as a protected one is not updated.
	refused("atomic", "protected-ref", "refused with the rest of the push", "HEAD:refs/heads/side", "HEAD:refs/heads/main")
	if f.mirrorRef("refs/heads/side") != "" {
		t.Fatal("side branch created by a refused push")
	}

	f.git(dst, "push", "-q", "origin", "HEAD:refs/heads/task-1")
	first := f.git(dst, "rev-parse", "HEAD")
	if f.mirrorRef("refs/heads/task-1") != first {
		t.Fatal("task branch not pushed")
	}
	if r := f.lastPush(t); r.Outcome != "ok" {
		t.Fatalf("task branch push record %+v", r)
	}
	// Force push: git refuses it (receive.denyNonFastForwards), atomically.
	f.git(dst, "reset", "-q", "--hard", "HEAD~1")
	f.commit(dst, "rewritten")
	refused("force", "non-fast-forward", "non-fast-forward", "--force", "HEAD:refs/heads/task-1", "HEAD:refs/heads/task-1b")
	if f.mirrorRef("refs/heads/task-1") != first || f.mirrorRef("refs/heads/task-1b") != "" {
		t.Fatal("a force push changed the mirror")
	}
	refused("delete", "deletion", "deleting refs/heads/task-1 is not allowed", ":refs/heads/task-1")
	if f.mirrorRef("refs/heads/task-1") != first {
		t.Fatal("task branch deleted")
	}

	// The operator allows force pushes and deletions for the project.
	policyDir := filepath.Join(f.base, "policy")
	if err := gatepolicy.Save(policyDir, "proj", gatepolicy.Policy{Protect: []string{"HEAD"}, AllowNonFastForward: true, AllowDeletions: true}); err != nil {
		t.Fatal(err)
	}
	f.git(dst, "push", "-q", "--force", "origin", "HEAD:refs/heads/task-1")
	f.git(dst, "push", "-q", "origin", "refs/tags/v1") // tags no longer protected
	f.git(dst, "push", "-q", "origin", ":refs/heads/task-1")
	if f.mirrorRef("refs/heads/task-1") != "" || f.mirrorRef("refs/tags/v1") == "" {
		t.Fatal("allowed force push / tag / deletion did not land")
	}

	// A namespace per task.
	if err := gatepolicy.Save(policyDir, "proj", gatepolicy.Policy{Protect: []string{"HEAD"}, TaskNamespace: "refs/heads/terok/{task}/*"}); err != nil {
		t.Fatal(err)
	}
	f.git(dst, "push", "-q", "origin", "HEAD:refs/heads/terok/1/fix")
	refused("other task's namespace", "namespace", "outside task 1's namespace refs/heads/terok/1/*", "HEAD:refs/heads/terok/2/fix")
	refused("outside namespace", "namespace", "outside task 1's namespace", "HEAD:refs/heads/feature")

	// The admin token is the operator's: no policy.
	adm := f.startGate(nil, "TEROK_GATE_ADMIN_TOKEN="+adminTok)
	f.git(dst, "push", "-q", "--force", adm.url(adminTok, "proj.git"), "HEAD:refs/heads/main")
	if f.mirrorRef("refs/heads/main") == main0 {
		t.Fatal("admin push to main refused")
	}

	// A policy file the gate cannot use refuses task pushes.
	if err := os.WriteFile(gatepolicy.File(policyDir, "proj"), []byte(`{"v":1,"protect":["main"]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	refused("bad policy", "policy-error", "push policy cannot be read", "HEAD:refs/heads/terok/1/fix2")
}

// TestSecretScan pushes credentials with real git (docs/gate.md, Secret
// scanning): refused with path and line, nothing updated, the secret in no
// output, record or log; a clean push and an old secret already in the
// mirror pass.
func TestSecretScan(t *testing.T) {
	f := newFixture(t)
	logFile := filepath.Join(f.dir, "gate.log")
	g := f.startGate([]string{"--log-file=" + logFile, "--access-log"})
	dst := f.pushClone(t, g, f.tokProj)
	secret := "terok-g-" + strings.Repeat("5a", 16)
	objects0, _ := filepath.Glob(filepath.Join(f.base, "proj.git", "objects", "pack", "*.pack"))
	// The secret sits in the first of two new commits, in a subdirectory.
	os.MkdirAll(filepath.Join(dst, "conf"), 0o755)
	os.WriteFile(filepath.Join(dst, "conf", "app.env"), []byte("A=1\nB=2\nGATE="+secret+"\n"), 0o644)
	f.git(dst, "add", ".")
	f.git(dst, "commit", "-q", "-m", "with secret")
	os.Remove(filepath.Join(dst, "conf", "app.env"))
	f.commit(dst, "secret removed again")
	out, err := f.tryGit(dst, "push", "origin", "HEAD:refs/heads/task-s")
	if err == nil {
		t.Fatalf("push with a secret succeeded:\n%s", out)
	}
	for _, want := range []string{"remote: terok gate: push refused: the pushed commits contain a credential at conf/app.env:3 (terok-gate-token)",
		"[remote rejected] HEAD -> task-s (secret-found: conf/app.env:3 (terok-gate-token))"} {
		if !strings.Contains(out, want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
	if f.mirrorRef("refs/heads/task-s") != "" {
		t.Fatal("refused push created the branch")
	}
	if objects, _ := filepath.Glob(filepath.Join(f.base, "proj.git", "objects", "pack", "*.pack")); len(objects) != len(objects0) {
		t.Fatalf("refused push left packs in the mirror: %v", objects)
	}
	if left, _ := filepath.Glob(filepath.Join(f.base, "proj.git", "terok-push-*")); len(left) != 0 {
		t.Fatalf("staging repositories left: %v", left)
	}
	r := f.lastPush(t)
	if r.Outcome != "refused" || r.Reason != "secret-found" {
		t.Fatalf("record %+v", r)
	}
	if s, _ := r.Fields["secret"].(map[string]any); s["path"] != "conf/app.env" || s["line"] != float64(3) || s["kind"] != "terok-gate-token" {
		t.Fatalf("record's secret member %+v", r.Fields["secret"])
	}
	for _, p := range []string{filepath.Join(f.dir, "audit", "gate.jsonl"), logFile} {
		if data, _ := os.ReadFile(p); strings.Contains(string(data), secret) || strings.Contains(out, secret) {
			t.Fatalf("the secret is in %s or the client output", p)
		}
	}

	// Rewritten without the secret: lands, also as a thin pack on top.
	f.git(dst, "reset", "-q", "--hard", "HEAD~2")
	f.commit(dst, "clean")
	f.git(dst, "push", "-q", "origin", "HEAD:refs/heads/task-s")
	want := f.git(dst, "rev-parse", "HEAD")
	if f.mirrorRef("refs/heads/task-s") != want {
		t.Fatal("clean push did not land")
	}
	f.commit(dst, "clean 2")
	f.git(dst, "push", "-q", "origin", "HEAD:refs/heads/task-s", "HEAD:refs/heads/task-t")
	if f.mirrorRef("refs/heads/task-t") != f.git(dst, "rev-parse", "HEAD") || f.mirrorRef("refs/heads/task-s") != f.git(dst, "rev-parse", "HEAD") {
		t.Fatal("second clean push did not land")
	}
	if n := f.git(filepath.Join(f.base, "proj.git"), "fsck", "--connectivity-only", "--no-dangling"); strings.Contains(n, "missing") {
		t.Fatalf("mirror not connected: %s", n)
	}
	// A private key block and an AWS key id.
	for name, content := range map[string]string{
		"id_ed25519": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
		"aws.cfg":    "[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\n",
	} {
		os.WriteFile(filepath.Join(dst, name), []byte(content), 0o600)
		f.git(dst, "add", ".")
		f.git(dst, "commit", "-q", "-m", name)
		if out, err := f.tryGit(dst, "push", "origin", "HEAD:refs/heads/task-k"); err == nil || !strings.Contains(out, "credential at "+name+":") {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
		f.git(dst, "reset", "-q", "--hard", "HEAD~1")
	}
	// The admin token's pushes are not scanned; a secret that is in the
	// mirror already is not new and does not block a task's push on top.
	adm := f.startGate(nil, "TEROK_GATE_ADMIN_TOKEN="+adminTok)
	os.WriteFile(filepath.Join(dst, "old.env"), []byte(secret+"\n"), 0o644)
	f.git(dst, "add", ".")
	f.git(dst, "commit", "-q", "-m", "operator's old secret")
	f.git(dst, "push", "-q", adm.url(adminTok, "proj.git"), "HEAD:refs/heads/operator")
	f.commit(dst, "on top")
	f.git(dst, "push", "-q", "origin", "HEAD:refs/heads/task-u")
	// --secret-scan=false lets a secret through.
	off := f.startGate([]string{"--secret-scan=false"})
	os.WriteFile(filepath.Join(dst, "new.env"), []byte("X="+strings.Replace(secret, "5a", "6b", 1)+"\n"), 0o644)
	f.git(dst, "add", ".")
	f.git(dst, "commit", "-q", "-m", "new secret")
	f.git(dst, "push", "-q", off.url(f.tokProj, "proj.git"), "HEAD:refs/heads/task-v")
}

// TestPushFsck: a task's push must not put objects into the mirror that
// attack whoever clones it later (the operator reviewing the push, or
// upstream's users after a promote): git checks every pushed object
// (receive.fsckObjects, docs/gate.md, Request handling), so a
// .gitmodules whose URL is a command-line option (CVE-2018-17456), a
// submodule name that climbs out of .git/modules (CVE-2018-11235) and a
// tree entry named .git are refused with nothing landed; an ordinary
// push still lands.
func TestPushFsck(t *testing.T) {
	f := newFixture(t)
	g := f.startGate(nil)
	dst := f.pushClone(t, g, f.tokProj)
	f.git(dst, "push", "-q", "origin", "HEAD:refs/heads/task-ok")
	if f.mirrorRef("refs/heads/task-ok") != f.git(dst, "rev-parse", "HEAD") {
		t.Fatal("control: an ordinary push did not land")
	}
	base := f.git(dst, "rev-parse", "HEAD")
	empty := f.git(dst, "hash-object", "-w", "--stdin")
	// submodule commits a .gitmodules naming one submodule.
	submodule := func(name, url string) string {
		f.git(dst, "config", "-f", ".gitmodules", "submodule."+name+".path", "sub")
		f.git(dst, "config", "-f", ".gitmodules", "submodule."+name+".url", url)
		f.git(dst, "add", ".gitmodules")
		f.git(dst, "commit", "-q", "-m", "submodule "+name)
		return f.git(dst, "rev-parse", "HEAD")
	}
	for i, c := range []struct {
		name    string
		commit  func() string
		message string
	}{
		{"submodule url is an option", func() string {
			return submodule("x", "--upload-pack=touch /tmp/terok-gate-fsck-pwned")
		}, "gitmodulesUrl"},
		{"submodule name climbs", func() string { return submodule("../../../hooks", "https://example.invalid/y") }, "gitmodulesName"},
		{"tree entry .git", func() string {
			cmd := exec.Command("git", "mktree")
			cmd.Dir, cmd.Env = dst, f.gitEnv()
			cmd.Stdin = strings.NewReader("100644 blob " + empty + "\t.git\n")
			tree, err := cmd.Output()
			if err != nil {
				t.Fatal(err)
			}
			return f.git(dst, "commit-tree", strings.TrimSpace(string(tree)), "-p", base, "-m", "dotgit")
		}, "hasDotgit"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f.git(dst, "reset", "-q", "--hard", base)
			id := c.commit()
			ref := "refs/heads/task-evil-" + strconv.Itoa(i)
			out, err := f.tryGit(dst, "push", "origin", id+":"+ref)
			if err == nil {
				t.Fatalf("push accepted:\n%s", out)
			}
			if !strings.Contains(out, c.message) {
				t.Errorf("git's answer does not name %s:\n%s", c.message, out)
			}
			if f.mirrorRef(ref) != "" {
				t.Fatal("the refused push created the branch")
			}
			if _, err := f.tryGit(filepath.Join(f.base, "proj.git"), "cat-file", "-e", id); err == nil {
				t.Fatal("the refused commit is in the mirror")
			}
		})
	}
}
