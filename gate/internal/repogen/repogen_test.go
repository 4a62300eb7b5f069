package repogen

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func head(t *testing.T, repo string) string {
	out, err := exec.Command("git", "-C", repo, "rev-parse", "refs/heads/main").CombinedOutput()
	if err != nil {
		t.Fatalf("rev-parse: %v %s", err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestDeterministic(t *testing.T) {
	spec := Spec{Name: "t", Files: 150, MeanSize: 300, RandomShare: 50, Commits: 3, ChurnFiles: 4, Seed: 7}
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.git"), filepath.Join(dir, "b.git")
	for _, p := range []string{a, b} {
		if err := Generate(context.Background(), p, spec); err != nil {
			t.Fatal(err)
		}
	}
	if ha, hb := head(t, a), head(t, b); ha != hb {
		t.Fatalf("same spec, different heads: %s %s", ha, hb)
	}
	out, _ := exec.Command("git", "-C", a, "ls-tree", "-r", "--name-only", "main").Output()
	if n := len(strings.Fields(string(out))); n != 150 {
		t.Fatalf("%d files, want 150", n)
	}
	out, _ = exec.Command("git", "-C", a, "rev-list", "--count", "main").Output()
	if strings.TrimSpace(string(out)) != "4" {
		t.Fatalf("commits: %s", out)
	}
	spec.Seed = 8
	c := filepath.Join(dir, "c.git")
	if err := Generate(context.Background(), c, spec); err != nil {
		t.Fatal(err)
	}
	if head(t, c) == head(t, a) {
		t.Fatal("seed ignored")
	}
	spec.MinPackBytes = 1 << 30
	if err := Generate(context.Background(), filepath.Join(dir, "d.git"), spec); err == nil {
		t.Fatal("pack size check did not fire")
	}
}
