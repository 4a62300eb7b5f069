package launch

import (
	"errors"
	"strings"
	"testing"
	"time"

	"terok.dev/sandbox/runner/internal/podman"
)

func TestFailedStep(t *testing.T) {
	cases := []struct {
		stderr  string
		created bool
		want    Step
	}{
		{"Error: localhost/x: image not known", false, StepCreate},
		{"Error: creating container storage: the container name \"x\" is already in use", false, StepCreate},
		{runcNotFoundText, true, StepCommand},
		{"Error: OCI runtime error: runc: runc create failed: unable to start container process: error during container init: error running hook #0: error running hook: exit status 1, stdout: , stderr: terok-shield hook: refusing bundle", true, StepHook},
		{"terok-shield hook: bundle version 3 is not supported", false, StepHook},
		{"Error: something else", true, StepCommand},
		{runcNotFoundText, false, StepCommand},
		{`Error: crun: executable file not found in $PATH: No such file or directory: OCI runtime attempted to invoke a command that was not found`, false, StepCommand},
		{"", false, StepCreate},
	}
	for _, c := range cases {
		if got := FailedStep(c.stderr, c.created); got != c.want {
			t.Errorf("FailedStep(%q, %v) = %q, want %q", c.stderr, c.created, got, c.want)
		}
	}
}

const runcNotFoundText = `Error: runc: runc create failed: unable to start container process: exec: "/no/such/binary": stat /no/such/binary: no such file or directory: OCI runtime attempted to invoke a command that was not found`

func TestIsNameClash(t *testing.T) {
	clash := Classify(podman.Result{Stderr: []byte(`Error: creating container storage: the container name "x" is already in use by 4f2c. You have to remove that container to be able to reuse that name: that name is already in use`), Code: 125}, errors.New("exit status 125"), "x", "i")
	if !IsNameClash(clash) {
		t.Fatalf("%v not a clash", clash)
	}
	other := Classify(podman.Result{Stderr: []byte("Error: image not known"), Code: 125}, errors.New("exit status 125"), "x", "i")
	if IsNameClash(other) || IsNameClash(errors.New("already in use")) || IsNameClash(nil) {
		t.Fatal("non-clash taken for a clash")
	}
}

func TestCreatedBy(t *testing.T) {
	started := time.Date(2026, 12, 2, 5, 0, 0, 0, time.UTC)
	args := []string{"run", "-d", "--annotation", AnnStateDir + "=/t/shield", "--name", "x", "img", "/no/such/binary"}
	ours := podman.Container{ID: "a", Created: started.Add(300 * time.Millisecond), CreateCommand: append([]string{"/usr/bin/podman"}, args...)}
	cases := []struct {
		name     string
		c        podman.Container
		stateDir string
		want     bool
	}{
		{"same argv, created after start", ours, "", true},
		{"argv0 differs (podman from PATH)", func() podman.Container { c := ours; c.CreateCommand = append([]string{"podman"}, args...); return c }(), "", true},
		{"created within the slack", func() podman.Container { c := ours; c.Created = started.Add(-time.Second); return c }(), "", true},
		{"created long before the launch", func() podman.Container { c := ours; c.Created = started.Add(-time.Minute); return c }(), "", false},
		{"other command", func() podman.Container {
			c := ours
			c.CreateCommand = []string{"podman", "run", "-d", "--name", "x", "img", "sleep", "inf"}
			return c
		}(), "", false},
		{"argv is a prefix of ours", func() podman.Container {
			c := ours
			c.CreateCommand = c.CreateCommand[:len(c.CreateCommand)-1]
			return c
		}(), "", false},
		{"no create command, annotation matches", podman.Container{ID: "a", Created: ours.Created, Annotations: map[string]string{AnnStateDir: "/t/shield"}}, "/t/shield", true},
		{"no create command, other state dir", podman.Container{ID: "a", Created: ours.Created, Annotations: map[string]string{AnnStateDir: "/u/shield"}}, "/t/shield", false},
		{"no create command, bypass launch", podman.Container{ID: "a", Created: ours.Created}, "", false},
		{"no create command, no annotation", podman.Container{ID: "a", Created: ours.Created}, "/t/shield", false},
	}
	for _, c := range cases {
		if got := CreatedBy(c.c, args, c.stateDir, started); got != c.want {
			t.Errorf("%s: CreatedBy = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestWithStepMessages(t *testing.T) {
	le := &LaunchError{Detail: "Error: runc: exec: \"/no/such/binary\": not found"}
	err := WithStep(le, StepCommand, RemovedNote("x"), CommandHint([]string{"/no/such/binary"}, "img"))
	want := "Container launch failed: starting the container's command failed.\n" +
		"Error: runc: exec: \"/no/such/binary\": not found\n\n" +
		"The container x was removed; the name is free for the next launch.\n\n" +
		"Hint: \"/no/such/binary\" could not be started in image \"img\"; check that it exists there and is executable."
	if err.Error() != want {
		t.Fatalf("got\n%s\nwant\n%s", err, want)
	}
	// podman's own hint (name clash, missing image) is kept.
	le = &LaunchError{Detail: "d", Hint: "Hint: image"}
	if got := WithStep(le, StepCreate, NotCreatedNote("x"), "other").Error(); got != "Container launch failed: container creation failed.\nd\n\nNo container x was left behind; the name is free.\n\nHint: image" {
		t.Fatalf("%q", got)
	}
	ge := &GPUError{Stderr: "cdi", Hint: GPUHint}
	if got := WithStep(ge, StepCreate, NotCreatedNote("x"), "").Error(); !strings.HasPrefix(got, "Container launch failed (GPU misconfiguration):\ncdi\n\nNo container x was left behind") || !strings.HasSuffix(got, GPUHint) {
		t.Fatalf("%q", got)
	}
	plain := errors.New("podman run x: context canceled")
	if WithStep(plain, StepCreate, "n", "h") != plain {
		t.Fatal("other errors are returned as they are")
	}
	for _, s := range []string{
		RemoveFailedNote("x", "Error: busy"), UncheckedNote("x", "db locked"),
	} {
		if !strings.Contains(s, "`podman rm -f -t 0 x`") {
			t.Errorf("%q lacks the removal command", s)
		}
	}
	if s := CleanupFailedNote("x", "kill: EPERM"); !strings.Contains(s, "`terok-sandbox stop x`") {
		t.Errorf("%q", s)
	}
	if s := HookHint("/s/tasks/x"); !strings.Contains(s, "/s/tasks/x/shield/hook-error.log") {
		t.Errorf("%q", s)
	}
	if s := CommandHint(nil, "img"); !strings.Contains(s, "default command of image \"img\"") {
		t.Errorf("%q", s)
	}
}

func TestAnnotationIn(t *testing.T) {
	args := []string{"run", "--annotation", "terok.shield.name=x", "--annotation", AnnStateDir + "=/t/shield", "--name", "x", "img", "--annotation"}
	if got := AnnotationIn(args, AnnStateDir); got != "/t/shield" {
		t.Fatalf("%q", got)
	}
	if got := AnnotationIn(args, "terok.shield.profiles"); got != "" {
		t.Fatalf("%q", got)
	}
	if got := AnnotationIn([]string{"--annotation"}, AnnStateDir); got != "" {
		t.Fatalf("%q", got)
	}
}
