package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/common/testkit"
)

// auditEnv is a state tree under a temporary directory holding the example
// records of docs/audit.md in the files their daemons write.
type auditEnv struct {
	t    *testing.T
	dir  string
	vars map[string]string
	env  config.Env
	cfg  config.Config
	// t1 are the documented daemon records of task t1 of project demo, in
	// time order: what `audit t1 --project demo` must print.
	t1 []audit.Record
	// gateLines is how many lines the gate file holds.
	gateLines int
}

func newAuditEnv(t *testing.T) *auditEnv {
	dir := t.TempDir()
	vars := testkit.RootVars(dir)
	vars["PATH"], vars["HOME"] = os.Getenv("PATH"), dir
	env := testkit.Env(vars, os.Geteuid(), dir)
	e := &auditEnv{t: t, dir: dir, vars: vars, env: env, cfg: config.Defaults(env)}
	for _, l := range testkit.DocExamples(t, filepath.Join("..", "..", "..", "docs", "audit.md"), 1) {
		r, err := audit.ParseLine([]byte(l))
		if err != nil {
			t.Fatalf("documented example %s: %v", l, err)
		}
		if r.Channel == "shield" {
			// The example container's shield file; the container
			// itself is gone, so it counts only with the task member.
			e.appendLine(filepath.Join(e.cfg.StateDir, "tasks", r.Container, "shield", "refused.jsonl"), l)
			continue
		}
		e.appendLine(e.cfg.AuditFile(r.Channel), l)
		if r.Channel == "gate" {
			e.gateLines++
		}
		if r.Task == "t1" && r.Project == "demo" {
			e.t1 = append(e.t1, r)
		}
	}
	sort.SliceStable(e.t1, func(i, j int) bool { return e.t1[i].Time.Before(e.t1[j].Time) })
	if len(e.t1) < 3 {
		t.Fatalf("docs/audit.md has only %d daemon examples of demo/t1", len(e.t1))
	}
	return e
}

func (e *auditEnv) appendLine(p, l string) {
	e.t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		e.t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(l + "\n"); err != nil {
		e.t.Fatal(err)
	}
}

func (e *auditEnv) run(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Run(append([]string{Program}, args...), Deps{Stdout: &out, Stderr: &errb, Env: e.env})
	return code, out.String(), errb.String()
}

func TestAuditJSONTimeline(t *testing.T) {
	e := newAuditEnv(t)
	code, out, errOut := e.run("audit", "t1", "--project", "demo", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != len(e.t1) {
		t.Fatalf("%d records, want the %d documented daemon examples of demo/t1:\n%s", len(lines), len(e.t1), out)
	}
	chans := map[string]bool{}
	for i, l := range lines {
		r, err := audit.ParseLine([]byte(l))
		if err != nil {
			t.Fatalf("output line %s: %v", l, err)
		}
		if !r.Time.Equal(e.t1[i].Time) || r.Event != e.t1[i].Event || r.Channel != e.t1[i].Channel {
			t.Fatalf("record %d is %s %s %s, want %s %s %s (time order)", i, r.Time, r.Channel, r.Event, e.t1[i].Time, e.t1[i].Channel, e.t1[i].Event)
		}
		if len(r.Fields) != len(e.t1[i].Fields) {
			t.Fatalf("record %d lost members: %s", i, l)
		}
		chans[r.Channel] = true
	}
	if !chans["gate"] || !chans["proxy"] || !chans["ssh"] {
		t.Fatalf("channels %v, want gate, proxy and ssh", chans)
	}
}

func TestAuditShieldRecordsWithTaskMember(t *testing.T) {
	e := newAuditEnv(t)
	e.appendLine(filepath.Join(e.cfg.StateDir, "tasks", "demo-t9", "shield", "refused.jsonl"),
		`{"v":1,"time":"2026-12-02T11:30:04Z","channel":"shield","event":"refused","outcome":"refused","reason":"private-range","project":"demo","task":"t1","container":"demo-t9","proto":"tcp","dst":"203.0.113.7","dport":443,"count":3}`)
	code, out, errOut := e.run("audit", "t1")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	rows := strings.Split(strings.TrimSpace(out), "\n")
	if len(rows) != len(e.t1)+2 || !strings.HasPrefix(rows[0], "TIME") {
		t.Fatalf("table:\n%s", out)
	}
	last := rows[len(rows)-1]
	for _, want := range []string{"2026-12-02T11:30:04.000Z", "shield", "refused tcp 203.0.113.7:443 x3", "refused (private-range)"} {
		if !strings.Contains(last, want) {
			t.Errorf("last row %q lacks %q", last, want)
		}
	}
	if !strings.Contains(rows[1], "refused (protected-ref)") || !strings.Contains(rows[1], "gate") {
		t.Errorf("first row %q", rows[1])
	}
	// The push shows its repository and the ref it tried to update.
	if !strings.Contains(rows[1], "push demo.git refs/heads/main 8a1f0c9..0b1c2d3") {
		t.Errorf("push row %q", rows[1])
	}
}

func TestAuditSinceAndSummary(t *testing.T) {
	e := newAuditEnv(t)
	since := e.t1[1].Time
	code, out, _ := e.run("audit", "t1", "--project", "demo", "--since", since.Format(time.RFC3339Nano), "--json")
	if code != 0 || strings.Count(out, "\n") != len(e.t1)-1 {
		t.Fatalf("--since %s: exit %d, %q", since, code, out)
	}
	code, out, errOut := e.run("audit", "--summary", "--json", "t1")
	if code != 0 {
		t.Fatalf("summary: exit %d %s", code, errOut)
	}
	var s struct {
		Records  int                       `json:"records"`
		Outcomes map[string]map[string]int `json:"outcomes"`
		Bytes    map[string]map[string]int64
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	want := map[string]map[string]int{}
	var respBytes int64
	for _, r := range e.t1 {
		if want[r.Channel] == nil {
			want[r.Channel] = map[string]int{}
		}
		want[r.Channel][r.Outcome]++
		if n, ok := r.Fields["resp_bytes"].(float64); ok && r.Channel == "proxy" {
			respBytes += int64(n)
		}
	}
	if s.Records != len(e.t1) || fmt.Sprint(s.Outcomes) != fmt.Sprint(want) || s.Bytes["proxy"]["resp_bytes"] != respBytes {
		t.Fatalf("summary %s, want outcomes %v and proxy resp_bytes %d", out, want, respBytes)
	}
	code, out, _ = e.run("audit", "--summary", "t1", "--project", "demo")
	if code != 0 || !strings.Contains(out, fmt.Sprintf("Task demo/t1: %d records", len(e.t1))) || !strings.Contains(out, "gate protected-ref") {
		t.Fatalf("human summary: %d\n%s", code, out)
	}
}

func TestAuditCorruptLineWarns(t *testing.T) {
	e := newAuditEnv(t)
	p := e.cfg.AuditFile("gate")
	e.appendLine(p, `{"v":1,"time":"2026-12-02T11:30:05Z","channel":"gate"`)
	e.appendLine(p, `{"v":1,"time":"2026-12-02T11:30:06Z","channel":"gate","event":"clone","outcome":"ok","project":"demo","task":"t1"}`)
	code, out, errOut := e.run("audit", "t1", "--project", "demo", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if strings.Count(out, "\n") != len(e.t1)+1 {
		t.Fatalf("want %d records around the corrupt line, got:\n%s", len(e.t1)+1, out)
	}
	if want := fmt.Sprintf("Warning: %s:%d:", p, e.gateLines+1); !strings.Contains(errOut, want) {
		t.Fatalf("stderr %q does not name %s", errOut, want)
	}
}

func TestAuditUsageAndUnknown(t *testing.T) {
	e := newAuditEnv(t)
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"audit"}, ExitUsage, "audit needs one TASK"},
		{[]string{"audit", "a", "b"}, ExitUsage, "audit needs one TASK"},
		{[]string{"audit", "t1", "--since", "yesterday"}, ExitUsage, "--since"},
		{[]string{"audit", "t1", "--summary", "--follow"}, ExitUsage, "does not combine"},
		{[]string{"audit", "t1", "--bogus"}, ExitUsage, "bogus"},
		{[]string{"audit", "../x"}, ExitUsage, "task"},
		{[]string{"audit", "t1", "--project", "a/b"}, ExitUsage, "project"},
		{[]string{"audit", "auditcli-nosuch-task"}, ExitError, "no audit record and no container for task auditcli-nosuch-task"},
		{[]string{"audit", "t1", "--project", "other"}, ExitError, "of project other"},
		{[]string{"audit", "t1", "--since", "2027-01-01"}, ExitError, "since 2027-01-01"},
		{[]string{"audit", "auditcli-nosuch-task", "--follow"}, ExitError, "no audit record"},
	} {
		code, _, errOut := e.run(c.args...)
		if code != c.code || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", c.args, code, errOut, c.code, c.want)
		}
	}
}
