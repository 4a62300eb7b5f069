package shield

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"terok.dev/sandbox/common/shieldbundle"
)

// inspectJSON is what `podman container inspect` prints for one container
// whose init process is pid, with the given annotations.
func inspectJSON(pid int, annotations map[string]string) string {
	type state struct {
		Pid     int  `json:"Pid"`
		Running bool `json:"Running"`
	}
	type config struct {
		Annotations map[string]string `json:"Annotations"`
	}
	// Structs of strings, ints and a string map always marshal.
	out, _ := json.Marshal([]struct {
		ID     string `json:"Id"`
		State  state  `json:"State"`
		Config config `json:"Config"`
	}{{ID: "0123456789abcdef", State: state{Pid: pid, Running: pid > 0}, Config: config{Annotations: annotations}}})
	return string(out)
}

// podmanShield is a shield whose podman is the given shell script.
func podmanShield(t *testing.T, script string) *Shield {
	t.Helper()
	bin := t.TempDir()
	fakeBin(t, bin, "podman", script)
	return New(Config{}, Options{Tools: Tools{Path: bin}, EUID: os.Geteuid()})
}

func TestContainerPID(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name, script string
		want         int
		notRunning   bool
		wantErr      string
	}{
		{"running", `[ "$1 $2 $3 $4" = "container inspect -- c1" ] && echo '` + inspectJSON(4242, nil) + `'`, 4242, false, ""},
		{"created, never started", `echo '` + inspectJSON(0, nil) + `'`, 0, true, ""},
		{"no such container", `echo '[]'; echo 'Error: no such container c1' >&2; exit 125`, 0, true, ""},
		{"podman failing with no-such wording", `echo 'Error: no such file or directory' >&2; exit 125`, 0, false, "no such file or directory"},
		{"unreadable output", `echo '{{.State.Pid}}'`, 0, false, "unreadable inspect output"},
		{"two containers", `echo '[{"Id":"a"},{"Id":"b"}]'`, 0, false, "2 containers"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pid, err := podmanShield(t, tt.script).ContainerPID(ctx, "c1")
			switch {
			case tt.notRunning:
				var nr *ContainerNotRunningError
				if !errors.Is(err, errNotRunning) || !errors.As(err, &nr) || nr.Container != "c1" {
					t.Fatalf("err = %v, want a ContainerNotRunningError for c1", err)
				}
			case tt.wantErr != "":
				if err == nil || errors.Is(err, errNotRunning) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
			default:
				if err != nil || pid != tt.want {
					t.Fatalf("pid %d err %v, want %d", pid, err, tt.want)
				}
			}
		})
	}
}

func TestContainerStates(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name, script, want, wantErr string
	}{
		{"states by full id", `[ "$*" = "ps --all --format json" ] && echo '[{"Id":"aaaa","Names":["x"],"State":"running"},{"Id":"bbbb","Names":["y"],"State":"Exited"}]'`, "aaaa=running bbbb=exited", ""},
		{"none", `echo '[]'`, "", ""},
		{"podman failing", `echo boom >&2; exit 125`, "", "boom"},
		{"text instead of json", `echo 'aaaa running'`, "", "unreadable podman ps output"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			states, err := podmanShield(t, tt.script).containerStates(ctx)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, id := range []string{"aaaa", "bbbb"} {
				if st, ok := states[id]; ok {
					got = append(got, id+"="+st)
				}
			}
			if strings.Join(got, " ") != tt.want || len(states) != len(got) {
				t.Fatalf("states %v, want %q", states, tt.want)
			}
		})
	}
}

func TestForContainerReadsTheAnnotation(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, script, wantErr string
	}{
		{"annotated", `echo '` + inspectJSON(1, map[string]string{shieldbundle.AnnStateDir: dir}) + `'`, ""},
		{"not a shielded container", `echo '` + inspectJSON(1, map[string]string{"other": "x"}) + `'`, "was not started with the shield"},
		{"no such container", `echo '[]'; exit 125`, "no such container c1"},
		{"podman failing", `echo 'database is locked' >&2; exit 125`, "database is locked"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			bin := t.TempDir()
			fakeBin(t, bin, "podman", tt.script)
			a := &Adapter{Opts: Options{Tools: Tools{Path: bin}, EUID: os.Geteuid()}}
			s, err := a.ForContainer(ctx, "c1")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || s == nil {
				t.Fatalf("shield %v err %v", s, err)
			}
		})
	}
}

// A container without the shield's annotation is a NotShieldedError (the
// caller's errors.As), one podman does not know is not.
func TestForContainerNotShielded(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name, script string
		notShielded  bool
	}{
		{"started without the shield", `echo '` + inspectJSON(4242, map[string]string{"other": "x"}) + `'`, true},
		{"no such container", `echo '[]'; exit 125`, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			bin := t.TempDir()
			fakeBin(t, bin, "podman", tt.script)
			a := &Adapter{Opts: Options{Tools: Tools{Path: bin}, EUID: os.Geteuid()}}
			_, err := a.ForContainer(ctx, "c1")
			var ns *NotShieldedError
			if err == nil || errors.As(err, &ns) != tt.notShielded {
				t.Fatalf("err = %v, want NotShieldedError: %v", err, tt.notShielded)
			}
			if tt.notShielded && (ns.Container != "c1" || !strings.Contains(err.Error(), shieldbundle.AnnStateDir)) {
				t.Fatalf("err = %v", err)
			}
		})
	}
}
