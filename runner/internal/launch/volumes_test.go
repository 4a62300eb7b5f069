package launch

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestValidateRefusesVolumesOverTheShieldState: real directories and
// links. A volume (in Volumes or in the extra arguments) whose host source
// is, contains or lies inside the task's shield state dir is refused,
// however it gets there; neighbours are accepted.
func TestValidateRefusesVolumesOverTheShieldState(t *testing.T) {
	root := t.TempDir()
	task := filepath.Join(root, "tasks", "t1")
	state := filepath.Join(task, "shield")
	work := filepath.Join(task, "workspace")
	other := filepath.Join(root, "data")
	for _, d := range []string{state, work, other} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(state, "profile.allowed"), []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := func(name, target string) string {
		p := filepath.Join(root, name)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	toState := link("to-state", state)
	toTask := link("to-task", "tasks/t1") // relative link
	toWork := link("to-work", work)
	toOther := link("to-other", other)
	dangling := link("dangling", filepath.Join(task, "not-yet", "x"))
	// A link into the workspace followed by "..": the kernel takes ".."
	// after the link, so this is <task>; cleaned first it would be
	// <root>/x.
	dotdot := toWork + "/../shield"

	cases := []struct {
		name     string
		volumes  []string
		extra    []string
		stateDir string
		want     string // "" = accepted
	}{
		{"the state dir", []string{state + ":/s"}, nil, state, "overlaps the task's shield state dir"},
		{"a file inside it", []string{filepath.Join(state, "profile.allowed") + ":/a:ro"}, nil, state, "overlaps"},
		{"the task dir containing it", []string{task + ":/task"}, nil, state, "overlaps"},
		{"the root", []string{"/:/host:ro"}, nil, state, "overlaps"},
		{"a link to it", []string{toState + ":/s"}, nil, state, "overlaps"},
		{"a relative link to the task dir", []string{toTask + ":/t"}, nil, state, "overlaps"},
		{"through a link, then ..", []string{dotdot + ":/s"}, nil, state, "overlaps"},
		{"unclean spelling", []string{task + "//./shield/:/s"}, nil, state, "overlaps"},
		{"state dir not created yet, task dir mounted", []string{task + ":/t"}, nil, filepath.Join(task, "shield2"), "overlaps"},
		{"dangling link", []string{dangling + ":/d"}, nil, state, "dangling symbolic link"},
		{"the workspace beside it", []string{work + ":/workspace"}, nil, state, ""},
		{"a link elsewhere", []string{toOther + ":/data:ro,z"}, nil, state, ""},
		{"a name that only starts like it", []string{state + "-old:/x"}, nil, state, ""},
		{"missing source elsewhere", []string{filepath.Join(other, "new") + ":/n"}, nil, state, ""},
		{"named volume", []string{"cache:/cache"}, nil, state, ""},
		{"anonymous volume", []string{"/scratch"}, nil, state, ""},
		{"relative path", []string{"./shield:/s"}, nil, state, "neither an absolute path nor a named volume"},
		{"relative with slash", []string{"tasks/t1:/s"}, nil, state, "neither an absolute path nor a named volume"},
		{"home shorthand", []string{"~/x:/x"}, nil, state, "neither an absolute path nor a named volume"},
		{"no state dir known: containment not judged", []string{state + ":/s"}, nil, "", ""},
		{"extra -v", nil, []string{"-v", toState + ":/s"}, state, `extra argument "-v ` + toState + `:/s"`},
		{"extra -vSPEC", nil, []string{"-v" + state + ":/s"}, state, "overlaps"},
		{"extra -v=SPEC", nil, []string{"-v=" + state + ":/s"}, state, "overlaps"},
		{"extra grouped -itv", nil, []string{"-itv", task + ":/t"}, state, "overlaps"},
		{"extra --volume", nil, []string{"--volume", toTask + ":/t"}, state, "overlaps"},
		{"extra --volume=", nil, []string{"--volume=" + state + ":/s:ro"}, state, "overlaps"},
		{"extra --mount", nil, []string{"--mount", "type=bind,source=" + toState + ",target=/s"}, state, "overlaps"},
		{"extra --mount= src", nil, []string{"--mount=type=bind,src=" + task + ",dst=/t,ro"}, state, "overlaps"},
		{"extra --mount tmpfs", nil, []string{"--mount", "type=tmpfs,target=/run"}, state, ""},
		{"extra -v elsewhere", nil, []string{"-v", work + ":/w"}, state, ""},
		{"extra -e is not -v", nil, []string{"-e", "X=" + state}, state, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Params{Name: "c", Image: "i", Volumes: c.volumes, ExtraArgs: c.extra, ShieldStateDir: c.stateDir}.Validate()
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.want != "" && err == nil:
				t.Fatalf("accepted, want refusal with %q", c.want)
			case c.want != "" && !strings.Contains(err.Error(), c.want):
				t.Fatalf("error %q lacks %q", err, c.want)
			}
		})
	}
}

func TestResolveHostPath(t *testing.T) {
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, "a", "b"), filepath.Join(root, "lb")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ in, want, err string }{
		{filepath.Join(root, "a"), filepath.Join(root, "a"), ""},
		{filepath.Join(root, "lb"), filepath.Join(root, "a", "b"), ""},
		{root + "/lb/..", filepath.Join(root, "a"), ""},
		{root + "/lb/new/x", filepath.Join(root, "a", "b", "new", "x"), ""},
		{root + "/lb/new/../x", "", `".."`},
		{root + "/a/b//./new", filepath.Join(root, "a", "b", "new"), ""},
	} {
		got, err := resolveHostPath(c.in)
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("resolveHostPath(%s) = %q, %v; want error %q", c.in, got, err, c.err)
		case c.err == "" && (err != nil || got != c.want):
			t.Errorf("resolveHostPath(%s) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}
