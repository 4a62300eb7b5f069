package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"terok.dev/sandbox/common/gatepolicy"
)

func TestGatePolicyCLI(t *testing.T) {
	g := newGateCLI(t)
	file := filepath.Join(g.dir, "state", "gate", "policy", "demo.json")
	code, out, errOut := g.run("gate", "policy", "demo")
	if code != 0 || !strings.Contains(out, "default (no policy file)") || !strings.Contains(out, "Protected:        HEAD refs/tags/*") {
		t.Fatalf("show default: %d %q %q", code, out, errOut)
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Fatal("showing wrote a file")
	}
	code, out, errOut = g.run("gate", "policy", "demo", "--protect", "refs/heads/release/*", "--unprotect", "refs/tags/*",
		"--allow-force", "--task-namespace", "refs/heads/terok/{task}/*", "--json")
	if code != 0 {
		t.Fatalf("set: %d %q %q", code, out, errOut)
	}
	var shown struct {
		Source string            `json:"source"`
		Policy gatepolicy.Policy `json:"policy"`
	}
	if err := json.Unmarshal([]byte(out), &shown); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	want := gatepolicy.Policy{V: 1, Protect: []string{"HEAD", "refs/heads/release/*"}, AllowNonFastForward: true, TaskNamespace: "refs/heads/terok/{task}/*"}
	got, found, err := gatepolicy.Load(filepath.Dir(file), "demo")
	if err != nil || !found || shown.Source != file || strings.Join(got.Protect, ",") != strings.Join(want.Protect, ",") ||
		got.AllowNonFastForward != true || got.AllowDeletions || got.TaskNamespace != want.TaskNamespace {
		t.Fatalf("file %+v (%v %v), shown %+v", got, found, err, shown)
	}
	// Flags after the project, =false, off.
	if code, out, errOut = g.run("gate", "policy", "demo", "--allow-force=false", "--allow-delete", "--task-namespace", "off"); code != 0 ||
		!strings.Contains(out, "Force pushes:     refused") || !strings.Contains(out, "Deletions:        allowed") || !strings.Contains(out, "Task namespace:   off") {
		t.Fatalf("change: %d %q %q", code, out, errOut)
	}
	// Bad input: exit 2 with what is wrong and an example; the file is unchanged.
	before, _ := os.ReadFile(file)
	for _, args := range [][]string{
		{"gate", "policy", "demo", "--protect", "main"},
		{"gate", "policy", "demo", "--protect", "refs/heads/a..b"},
		{"gate", "policy", "demo", "--task-namespace", "refs/heads/terok/*"},
		{"gate", "policy", "demo", "--unprotect", "refs/heads/never"},
		{"gate", "policy"},
		{"gate", "policy", "../x"},
	} {
		code, _, errOut := g.run(args...)
		if code != 2 || errOut == "" {
			t.Errorf("%v: exit %d %q, want 2", args, code, errOut)
		}
		if strings.Contains(strings.Join(args, " "), "--") && !strings.Contains(errOut, "e.g.") {
			t.Errorf("%v: no example in %q", args, errOut)
		}
	}
	if after, _ := os.ReadFile(file); string(after) != string(before) {
		t.Fatal("a refused change altered the file")
	}
	// A corrupt file: exit 1 naming the fix; --reset repairs it.
	os.WriteFile(file, []byte("{"), 0o644)
	if code, _, errOut := g.run("gate", "policy", "demo"); code != 1 || !strings.Contains(errOut, "--reset") {
		t.Fatalf("corrupt: %d %q", code, errOut)
	}
	if code, out, errOut := g.run("gate", "policy", "demo", "--reset"); code != 0 || !strings.Contains(out, "HEAD refs/tags/*") {
		t.Fatalf("reset: %d %q %q", code, out, errOut)
	}
}
