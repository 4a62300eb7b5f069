package podman

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"terok.dev/sandbox/runner/internal/rundebug"
)

// fake writes an executable shell script standing in for podman; it records
// its argv (one per line) in <dir>/argv.
func fake(t *testing.T, body string) (Podman, string) {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "podman")
	script := "#!/bin/sh\nprintf '%s\\n' \"$@\" > " + filepath.Join(dir, "argv") + "\n" + body + "\n"
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return Podman{Bin: p}, filepath.Join(dir, "argv")
}

func argv(t *testing.T, file string) []string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

func missing(t *testing.T) Podman { return Podman{Bin: filepath.Join(t.TempDir(), "absent")} }

// inspectOf is `podman container inspect` output for one container.
func inspectOf(status string, running bool) string {
	return "cat <<'J'\n" + `[{"Id":"1","State":{"Status":"` + status + `","Running":` + strconv.FormatBool(running) + `}}]` + "\nJ"
}

func TestState(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name, body string
		want       string
		ok         bool
	}{
		{"running", inspectOf("Running", true), "running", true},
		{"exited", inspectOf("exited", false), "exited", true},
		{"no such container", "echo '[]'; exit 125", "", false},
		{"podman fails", "echo oops >&2; exit 125", "", false},
		{"text instead of JSON", "echo running", "", false},
		{"empty status", inspectOf("", false), "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, args := fake(t, c.body)
			got, ok := p.State(ctx, "c1")
			if got != c.want || ok != c.ok {
				t.Fatalf("got (%q,%v) want (%q,%v)", got, ok, c.want, c.ok)
			}
			if a := argv(t, args); !reflect.DeepEqual(a, []string{"container", "inspect", "--", "c1"}) {
				t.Fatalf("argv %q", a)
			}
		})
	}
	if _, ok := missing(t).State(ctx, "c"); ok {
		t.Fatal("missing podman gave a state")
	}
}

func TestIsRunning(t *testing.T) {
	ctx := context.Background()
	for body, want := range map[string]bool{inspectOf("running", true): true, inspectOf("exited", false): false, "exit 1": false, "echo true": false, "echo '[]'; exit 125": false} {
		p, args := fake(t, body)
		if got := p.IsRunning(ctx, "c"); got != want {
			t.Errorf("%q: got %v", body, got)
		}
		if a := argv(t, args); !reflect.DeepEqual(a, []string{"container", "inspect", "--", "c"}) {
			t.Fatalf("argv %q", a)
		}
	}
	if missing(t).IsRunning(ctx, "c") {
		t.Fatal("missing podman is running")
	}
}

// psSample is the shape of podman 4.3.1's `ps -a --format json` (trimmed).
const psSample = `[
 {"Id":"6c36","Names":["a.b-1"],"State":"running","Status":"Up 2 seconds ago","Labels":{"dev.terok.sandbox.project":"p"}},
 {"Id":"7d47","Names":["a.b-2"],"State":"exited","Labels":null},
 {"Id":"8e58","Names":["axb-3"],"State":"running"},
 {"Id":"9f69","Names":[],"State":"running"},
 {"Id":"a07a","Names":["a.b-5"],"State":"Up 3 seconds ago"},
 {"Id":"b18b","Names":["a.b-6"],"State":"Created"}
]`

func TestParsePs(t *testing.T) {
	got, err := ParsePs([]byte(psSample))
	if err != nil {
		t.Fatal(err)
	}
	var names, states []string
	for _, e := range got {
		names, states = append(names, e.Name()), append(states, e.State)
	}
	if strings.Join(names, " ") != "a.b-1 a.b-2 axb-3 a.b-5 a.b-6" || strings.Join(states, " ") != "running exited running running created" {
		t.Fatalf("names %q states %q", names, states)
	}
	if got[0].ID != "6c36" || got[0].Labels["dev.terok.sandbox.project"] != "p" || !strings.Contains(string(got[0].Raw), `"Status":"Up 2 seconds ago"`) {
		t.Fatalf("%+v %s", got[0], got[0].Raw)
	}
	for _, bad := range []string{"", "a.b-1 running", "{}", `[1]`, `[{"Names":"x"}]`} {
		if _, err := ParsePs([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if e, err := ParsePs([]byte("[]")); err != nil || len(e) != 0 {
		t.Fatalf("empty list: %v %v", e, err)
	}
}

// FuzzParsePs: podman's output never panics the parser, and every entry it
// returns has a name and its raw element.
func FuzzParsePs(f *testing.F) {
	f.Add([]byte(psSample))
	f.Add([]byte("[]"))
	f.Add([]byte(`[{"Names":["x"],"State":null}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := ParsePs(data)
		if err != nil {
			return
		}
		for _, e := range entries {
			if e.Name() == "" || len(e.Raw) == 0 {
				t.Fatalf("entry %+v", e)
			}
		}
	})
}

func TestProjectStates(t *testing.T) {
	ctx := context.Background()
	p, args := fake(t, "cat <<'J'\n"+psSample+"\nJ")
	got := p.ProjectStates(ctx, "a.b")
	want := map[string]string{"a.b-1": "running", "a.b-2": "exited", "a.b-5": "running", "a.b-6": "created"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v want %v", got, want)
	}
	wantArgv := []string{"ps", "-a", "--format", "json", "--filter", `name=^a\.b-`}
	if a := argv(t, args); !reflect.DeepEqual(a, wantArgv) {
		t.Fatalf("argv %q want %q", a, wantArgv)
	}
	for _, body := range []string{"echo '[{\"Names\":[\"x-1\"],\"State\":\"running\"}]'; exit 1", "echo 'x-1 running'"} {
		fail, _ := fake(t, body)
		if s := fail.ProjectStates(ctx, "x"); len(s) != 0 {
			t.Fatalf("%q gave %v", body, s)
		}
	}
	if s := missing(t).ProjectStates(ctx, "x"); s == nil || len(s) != 0 {
		t.Fatalf("missing podman gave %v", s)
	}
}

func TestNameFilterEscapes(t *testing.T) {
	for in, want := range map[string]string{"proj": "name=^proj-", "a.b": `name=^a\.b-`, "a+b(c)*[d]$^": `name=^a\+b\(c\)\*\[d\]\$\^-`} {
		if got := NameFilter(in); got != want {
			t.Errorf("NameFilter(%q) = %q want %q", in, got, want)
		}
	}
}

func TestWait(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name, body string
		timeout    time.Duration
		want       int
	}{
		{"container exit code", "echo 42", 0, 42},
		{"zero", "echo 0", 0, 0},
		{"stdout empty → podman status", "echo 'no such container' >&2; exit 125", 0, 125},
		{"not an integer", "echo banana", 0, 1},
		{"timeout", "exec sleep 30", 200 * time.Millisecond, ExitTimeout},
		{"first line of several", "printf '3\\n4\\n'", 0, 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, args := fake(t, c.body)
			if got := p.Wait(ctx, "c", c.timeout); got != c.want {
				t.Fatalf("got %d want %d", got, c.want)
			}
			if a := argv(t, args); !reflect.DeepEqual(a, []string{"wait", "c"}) {
				t.Fatalf("argv %q", a)
			}
		})
	}
	if got := missing(t).Wait(ctx, "c", 0); got != 1 {
		t.Fatalf("missing podman: %d", got)
	}
}

func TestStopIgnoresErrorsAndLogs(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls")
	p, _ := fake(t, `echo "$@" >> `+calls+`; [ "$3" = gone ] && { echo 'no such container' >&2; exit 1; }; exit 0`)
	logPath := filepath.Join(dir, "debug.log")
	p.Debug = rundebug.New(logPath)
	p.Stop(ctx, []string{"a", "gone", "b"})
	data, _ := os.ReadFile(calls)
	if string(data) != "rm -f a\nrm -f gone\nrm -f b\n" {
		t.Fatalf("calls %q", data)
	}
	logData, _ := os.ReadFile(logPath)
	for _, s := range []string{"DEBUG: stop: removing container a", "DEBUG: stop: container a removed", "stop: podman rm -f gone ended", "container b removed"} {
		if !strings.Contains(string(logData), s) {
			t.Errorf("debug log lacks %q:\n%s", s, logData)
		}
	}
	// A missing podman must not fail or panic either.
	missing(t).Stop(ctx, []string{"x"})
}

func TestStreamLogs(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name    string
		body    string
		follow  bool
		timeout time.Duration
		want    LogOutcome
		out     string
	}{
		{"ready marker ends streaming", `echo starting; echo '  >> init complete  '; exec sleep 30`, true, 0, LogReady, "starting\n>> init complete\n"},
		{"stderr merged", `echo err-line >&2; echo '>> init complete'; exec sleep 30`, true, 0, LogReady, "err-line\n>> init complete\n"},
		{"final line without newline", `printf 'a\n\n   \n>> init complete'`, true, 0, LogReady, "a\n>> init complete\n"},
		{"ended without marker", `echo one; echo two`, true, 0, LogEnded, "one\ntwo\n"},
		{"timeout", `echo waiting; exec sleep 30`, true, 300 * time.Millisecond, LogTimeout, "waiting\n"},
		{"invalid utf-8 replaced", `printf 'bad \377 byte\n'`, false, 0, LogEnded, "bad \uFFFD byte\n"},
		{"crlf", `printf 'x\r\n>> init complete\r\n'`, true, 0, LogReady, "x\n>> init complete\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, args := fake(t, c.body)
			var out bytes.Buffer
			got, err := p.StreamLogs(ctx, &out, "c", c.follow, c.timeout, ContainsMarker(ReadyMarker))
			if got != c.want || err != nil {
				t.Fatalf("outcome %v err %v, want %v", got, err, c.want)
			}
			if out.String() != c.out {
				t.Fatalf("out %q want %q", out.String(), c.out)
			}
			wantArgv := []string{"logs", "--", "c"}
			if c.follow {
				wantArgv = []string{"logs", "-f", "--", "c"}
			}
			if a := argv(t, args); !reflect.DeepEqual(a, wantArgv) {
				t.Fatalf("argv %q", a)
			}
		})
	}
	if got, err := missing(t).StreamLogs(ctx, nil, "c", true, 0, nil); got != LogError || !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing podman: %v %v", got, err)
	}
}

// A podman logs that fails by itself (no such container) is an error, not
// the end of the log.
func TestStreamLogsPodmanFailure(t *testing.T) {
	p, _ := fake(t, `echo 'Error: no container with name or ID "c" found: no such container' >&2; exit 125`)
	var out bytes.Buffer
	got, err := p.StreamLogsWith(context.Background(), &out, "c", LogOptions{Tail: -1}, 0, nil)
	if got != LogError || err == nil || !strings.Contains(err.Error(), "exit status 125") {
		t.Fatalf("%v %v", got, err)
	}
}

func TestLogOptionsArgs(t *testing.T) {
	cases := []struct {
		o    LogOptions
		want []string
	}{
		{LogOptions{Tail: -1}, []string{"logs", "--", "c"}},
		{LogOptions{Follow: true, Tail: 0}, []string{"logs", "-f", "--tail=0", "--", "c"}},
		{LogOptions{Tail: 20, Since: "10m"}, []string{"logs", "--tail=20", "--since=10m", "--", "c"}},
		{LogOptions{Tail: -1, Since: "-x"}, []string{"logs", "--since=-x", "--", "c"}},
	}
	for _, c := range cases {
		if got := c.o.Args("c"); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%+v: %q want %q", c.o, got, c.want)
		}
	}
}

func TestStreamLogsLongLineIsSplit(t *testing.T) {
	p, _ := fake(t, `head -c 200000 /dev/zero | tr '\0' x; echo; echo '>> init complete'`)
	var out bytes.Buffer
	got, err := p.StreamLogs(context.Background(), &out, "c", true, 0, ContainsMarker(ReadyMarker))
	if got != LogReady || err != nil {
		t.Fatalf("%v %v", got, err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 5 || len(lines[0]) != MaxLineBytes {
		t.Fatalf("%d lines, first %d bytes", len(lines), len(lines[0]))
	}
}

func TestFreePorts(t *testing.T) {
	l, port, err := ReservePort("")
	if err != nil {
		t.Fatal(err)
	}
	if port <= 0 || l.Addr().(*net.TCPAddr).IP.String() != "127.0.0.1" {
		t.Fatalf("port %d addr %v", port, l.Addr())
	}
	// Reserved means nobody else can bind it meanwhile.
	if l2, err := net.Listen("tcp", l.Addr().String()); err == nil {
		l2.Close()
		t.Fatal("reserved port was bindable")
	}
	l.Close()
	p, err := FindFreePort("127.0.0.1")
	if err != nil || p <= 0 {
		t.Fatalf("%d %v", p, err)
	}
	l3, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		t.Fatalf("free port not bindable: %v", err)
	}
	l3.Close()
	if _, err := FindFreePort("256.0.0.1"); err == nil {
		t.Fatal("bad host accepted")
	}
}

// ExecShowing copies stderr (a pull's progress) as it comes and still
// captures it for error messages.
func TestExecShowing(t *testing.T) {
	cases := []struct {
		name, body string
		wantErr    bool
	}{
		{"pull then id", "echo 'Copying blob sha256:aa done' >&2; echo id1", false},
		{"pull then failure", "echo 'Copying blob sha256:aa done' >&2; echo 'Error: no space' >&2; exit 125", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, _ := fake(t, c.body)
			var show bytes.Buffer
			res, err := p.ExecShowing(context.Background(), &show, "run")
			if (err != nil) != c.wantErr || !strings.Contains(show.String(), "Copying blob sha256:aa done") || string(res.Stderr) != show.String() {
				t.Fatalf("err %v, shown %q, captured %q", err, show.String(), res.Stderr)
			}
		})
	}
}
