package gatepolicy

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		pat, ref string
		want     bool
	}{
		{"refs/heads/main", "refs/heads/main", true},
		{"refs/heads/main", "refs/heads/main2", false},
		{"refs/tags/*", "refs/tags/v1", true},
		{"refs/tags/*", "refs/tags/v1/rc/2", true},
		{"refs/tags/*", "refs/heads/tags/v1", false},
		{"refs/heads/release/*", "refs/heads/release", false},
		{"refs/heads/*/wip", "refs/heads/a/b/wip", true},
		{"refs/heads/*/wip", "refs/heads/wip", false},
		{"refs/heads/*-x-*", "refs/heads/a-x-b", true},
		{"refs/heads/*-x-*", "refs/heads/a-x", false},
		{"refs/*", "refs/notes/commits", true},
	} {
		if got := Match(tc.pat, tc.ref); got != tc.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tc.pat, tc.ref, got, tc.want)
		}
	}
}

func TestCheckPatterns(t *testing.T) {
	for _, ok := range []string{"HEAD", "refs/heads/main", "refs/tags/*", "refs/heads/*/wip", "refs/heads/release-*"} {
		if err := CheckPattern(ok); err != nil {
			t.Errorf("CheckPattern(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "main", "heads/main", "refs/heads/a..b", "refs/heads/**", "refs/heads/a b", "refs/heads/", "refs/heads/x.lock", "refs/heads/[ab]", "head"} {
		err := CheckPattern(bad)
		if err == nil || !strings.Contains(err.Error(), "e.g.") {
			t.Errorf("CheckPattern(%q) = %v, want an error with an example", bad, err)
		}
	}
	for _, ok := range []string{"refs/heads/terok/{task}/*", "refs/heads/{task}", "refs/heads/t-{task}-*"} {
		if err := CheckNamespace(ok); err != nil {
			t.Errorf("CheckNamespace(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"refs/heads/terok/*", "refs/heads/{task}/{task}", "{task}", "refs/heads/{task}..x"} {
		if err := CheckNamespace(bad); err == nil {
			t.Errorf("CheckNamespace(%q) accepted", bad)
		}
	}
}

func TestDecide(t *testing.T) {
	def := Default()
	ns := Default()
	ns.TaskNamespace = "refs/heads/terok/{task}/*"
	loose := Policy{V: 1, AllowDeletions: true, Protect: []string{}}
	for _, tc := range []struct {
		name string
		p    Policy
		u    RefUpdate
		head string
		want string
	}{
		{"default branch", def, RefUpdate{Ref: "refs/heads/main"}, "refs/heads/main", "protected-ref"},
		{"default branch renamed", def, RefUpdate{Ref: "refs/heads/main"}, "refs/heads/trunk", ""},
		{"no HEAD", def, RefUpdate{Ref: "refs/heads/main"}, "", ""},
		{"tag", def, RefUpdate{Ref: "refs/tags/v1.0"}, "refs/heads/main", "protected-ref"},
		{"task branch", def, RefUpdate{Ref: "refs/heads/feature"}, "refs/heads/main", ""},
		{"deletion", def, RefUpdate{Ref: "refs/heads/feature", Delete: true}, "refs/heads/main", "deletion"},
		{"deletion allowed", loose, RefUpdate{Ref: "refs/heads/feature", Delete: true}, "refs/heads/main", ""},
		{"protected wins over deletion", def, RefUpdate{Ref: "refs/tags/v1", Delete: true}, "", "protected-ref"},
		{"in namespace", ns, RefUpdate{Ref: "refs/heads/terok/t1/fix"}, "refs/heads/main", ""},
		{"other task's namespace", ns, RefUpdate{Ref: "refs/heads/terok/t2/fix"}, "refs/heads/main", "namespace"},
		{"namespace prefix trick", ns, RefUpdate{Ref: "refs/heads/terok/t1x/fix"}, "refs/heads/main", "namespace"},
		{"outside namespace", ns, RefUpdate{Ref: "refs/heads/feature"}, "refs/heads/main", "namespace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.p.Decide([]RefUpdate{tc.u}, Push{Head: tc.head, Task: "t1"})
			reason := ""
			if len(got) == 1 {
				reason = got[0].Reason
				if got[0].Ref != tc.u.Ref || got[0].Msg == "" {
					t.Fatalf("refusal %+v", got[0])
				}
			}
			if len(got) > 1 || reason != tc.want {
				t.Fatalf("Decide = %+v, want reason %q", got, tc.want)
			}
		})
	}
	// A task without a name never matches a namespace.
	if got := ns.Decide([]RefUpdate{{Ref: "refs/heads/terok//x"}}, Push{}); len(got) != 1 {
		t.Fatalf("empty task: %+v", got)
	}
}

func TestLoadSave(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "policy")
	p, found, err := Load(dir, "demo")
	if err != nil || found || !reflect.DeepEqual(p, Default()) {
		t.Fatalf("missing file: %+v %v %v", p, found, err)
	}
	want := Policy{V: 1, Protect: []string{"refs/heads/release/*"}, AllowNonFastForward: true, TaskNamespace: "refs/heads/terok/{task}/*"}
	if err := Save(dir, "demo", want); err != nil {
		t.Fatal(err)
	}
	got, found, err := Load(dir, "demo")
	if err != nil || !found || !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip: %+v %v %v", got, found, err)
	}
	if err := Save(dir, "demo", Policy{Protect: []string{"main"}}); err == nil {
		t.Fatal("Save accepted a bad pattern")
	}
	got, err = Update(dir, "demo", func(p *Policy) error { p.AllowDeletions = true; return nil })
	if err != nil || !got.AllowDeletions || !got.AllowNonFastForward {
		t.Fatalf("Update: %+v %v", got, err)
	}
	// Unknown members are ignored; a newer version and bad patterns are errors.
	for _, tc := range []struct {
		data string
		ok   bool
	}{
		{`{"v":1,"protect":["HEAD"],"future_member":{"x":1}}`, true},
		{`{"v":2,"protect":[]}`, false},
		{`{"protect":[]}`, false},
		{`{"v":1,"protect":["main"]}`, false},
		{`{"v":1,"protect":[],"task_namespace":"refs/heads/x/*"}`, false},
		{`{"v":1`, false},
	} {
		if err := os.WriteFile(File(dir, "x"), []byte(tc.data), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, _, err := Load(dir, "x"); (err == nil) != tc.ok {
			t.Errorf("Load(%s): %v", tc.data, err)
		}
	}
}

// FuzzMatch checks Match against a regular expression built from the
// documented rule (* matches any run of characters, / included).
func FuzzMatch(f *testing.F) {
	f.Add("refs/heads/*/wip", "refs/heads/a/b/wip")
	f.Add("refs/*-*", "refs/a-b-c")
	f.Fuzz(func(t *testing.T, pat, ref string) {
		parts := strings.Split(pat, "*")
		for i := range parts {
			parts[i] = regexp.QuoteMeta(parts[i])
		}
		re, err := regexp.Compile(`^(?s:` + strings.Join(parts, ".*") + `)$`)
		if err != nil {
			t.Skip()
		}
		if got, want := Match(pat, ref), re.MatchString(ref); got != want {
			t.Fatalf("Match(%q, %q) = %v, reference %v", pat, ref, got, want)
		}
	})
}
