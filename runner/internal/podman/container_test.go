package podman

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// inspectSample is the shape podman 4.3.1 prints (trimmed to the fields
// read).
const inspectSample = `[
 {
  "Id": "4f2c9a",
  "Created": "2026-12-02T05:01:02.123456789Z",
  "State": {"Status": "Created", "Running": false},
  "Config": {
   "CreateCommand": ["/usr/bin/podman", "run", "-d", "--name", "x", "img"],
   "Annotations": {"terok.shield.state_dir": "/s/tasks/x/shield"}
  }
 }
]`

func TestParseInspect(t *testing.T) {
	c, err := ParseInspect([]byte(inspectSample))
	if err != nil {
		t.Fatal(err)
	}
	want := time.Date(2026, 12, 2, 5, 1, 2, 123456789, time.UTC)
	if c.ID != "4f2c9a" || !c.Created.Equal(want) || c.Status != "created" ||
		strings.Join(c.CreateCommand, " ") != "/usr/bin/podman run -d --name x img" ||
		c.Annotations["terok.shield.state_dir"] != "/s/tasks/x/shield" || c.Pid != 0 {
		t.Fatalf("%+v", c)
	}
	if c, err := ParseInspect([]byte(`[{"Id":"a","State":{"Status":"running","Running":true,"Pid":4242}}]`)); err != nil || c.Pid != 4242 || !c.Running {
		t.Fatalf("running container: %+v %v", c, err)
	}
	for _, bad := range []string{"", "Running", "[]", `[{"Id":"a"},{"Id":"b"}]`, `[{"Created":"2026-12-02T05:01:02Z"}]`, `[{"Id":"a","Created":"yesterday"}]`, "{}"} {
		if _, err := ParseInspect([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// FuzzParseInspect: podman's output never panics the parser, and what it
// accepts has an id.
func FuzzParseInspect(f *testing.F) {
	f.Add([]byte(inspectSample))
	f.Add([]byte("[]"))
	f.Add([]byte(`[{"Id":"a","Config":{"CreateCommand":null,"Annotations":{"k":"v"}}}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseInspect(data)
		if err == nil && c.ID == "" {
			t.Fatal("accepted without an id")
		}
	})
}

// scriptedPodman writes a podman stand-in with the given shell body; each
// call's arguments are appended to the returned log.
func scriptedPodman(t *testing.T, body string) (Podman, string) {
	t.Helper()
	dir := t.TempDir()
	log := filepath.Join(dir, "calls")
	bin := filepath.Join(dir, "podman")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho \"$*\" >> "+log+"\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return Podman{Bin: bin}, log
}

func TestInspect(t *testing.T) {
	cases := []struct {
		name, body string
		wantErr    error
		wantText   string
	}{
		{"found", "cat <<'J'\n" + inspectSample + "\nJ", nil, ""},
		{"missing", "echo '[]'; echo 'Error: inspecting object: no such container x' >&2; exit 125", ErrNoSuchContainer, "x: no such container"},
		{"podman fails", "echo 'Error: database is locked' >&2; exit 125", nil, "podman container inspect x: Error: database is locked"},
		{"error text alone is not a missing container", "echo 'Error: no such container x' >&2; exit 125", nil, "podman container inspect x: Error: no such container x"},
		{"empty list but exit 0", "echo '[]'", nil, "describes 0 containers"},
		{"nonsense", "echo Running", nil, "unreadable inspect output"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, log := scriptedPodman(t, c.body)
			got, err := p.Inspect(context.Background(), "x")
			if calls, _ := os.ReadFile(log); string(calls) != "container inspect -- x\n" {
				t.Fatalf("calls %q", calls)
			}
			if c.wantErr == nil && c.wantText == "" {
				if err != nil || got.ID != "4f2c9a" {
					t.Fatalf("%+v %v", got, err)
				}
				return
			}
			if err == nil || (c.wantErr != nil && !errors.Is(err, c.wantErr)) || !strings.Contains(err.Error(), c.wantText) {
				t.Fatalf("err %v, want %v / %q", err, c.wantErr, c.wantText)
			}
			if c.wantErr == nil && errors.Is(err, ErrNoSuchContainer) {
				t.Fatal("a podman failure was taken for a free name")
			}
		})
	}
	if _, err := (Podman{Bin: filepath.Join(t.TempDir(), "none")}).Inspect(context.Background(), "x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing podman: %v", err)
	}
}

// ForceRemove runs even after the caller's context ended.
func TestForceRemoveSurvivesCancellation(t *testing.T) {
	p, log := scriptedPodman(t, "exit 0")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.ForceRemove(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if calls, _ := os.ReadFile(log); string(calls) != "rm -f -t 0 x\n" {
		t.Fatalf("calls %q", calls)
	}
}
