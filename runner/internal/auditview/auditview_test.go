package auditview

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/common/testkit"
)

// docExamples are the example records of docs/audit.md, the contract the
// readers are written against (not the writers' code).
func docExamples(t testing.TB) []string {
	t.Helper()
	return testkit.DocExamples(t, filepath.Join("..", "..", "..", "docs", "audit.md"), 4)
}

// testConfig is a configuration whose state lives in a temporary directory.
func testConfig(t testing.TB) config.Config {
	dir := t.TempDir()
	return config.Defaults(testkit.Env(testkit.RootVars(dir), 1000, dir))
}

// layOut writes the example lines into the files their channel's writer
// uses: the daemons' audit files and the shield file of the container's
// default task directory. It returns the task directories it used.
func layOut(t testing.TB, cfg config.Config, lines []string) []string {
	t.Helper()
	var dirs []string
	for _, l := range lines {
		r, err := audit.ParseLine([]byte(l))
		if err != nil {
			t.Fatalf("documented example %s: %v", l, err)
		}
		p := ""
		switch r.Channel {
		case "shield":
			d := filepath.Join(cfg.StateDir, "tasks", r.Container)
			dirs = append(dirs, d)
			p = filepath.Join(config.ShieldStateDir(d), ShieldFile)
		default:
			p = cfg.AuditFile(r.Channel)
		}
		appendLine(t, p, l)
	}
	return dirs
}

func appendLine(t testing.TB, p, l string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(l + "\n"); err != nil {
		t.Fatal(err)
	}
}

func TestCollectDocExamples(t *testing.T) {
	cfg := testConfig(t)
	lines := docExamples(t)
	dirs := layOut(t, cfg, lines)
	srcs := append(DaemonSources(cfg), ShieldSources(cfg, dirs, true)...)
	recs, err := Collect(srcs, Filter{Task: "t1", Project: "demo"}, func(m string) { t.Errorf("warning: %s", m) })
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, l := range lines {
		r, _ := audit.ParseLine([]byte(l))
		// A shield record without ids is the task directory's; one that
		// names another project/task is filtered out like any record.
		if (r.Task == "t1" && r.Project == "demo") || (r.Channel == "shield" && r.Task == "" && r.Project == "") {
			want++
		}
	}
	if len(recs) != want {
		t.Fatalf("%d records of the %d documented examples of demo/t1", len(recs), want)
	}
	chans := map[string]bool{}
	for i, r := range recs {
		chans[r.Channel] = true
		if i > 0 && r.Time.Before(recs[i-1].Time) {
			t.Fatalf("record %d (%s) before record %d: not in time order", i, r.Time, i-1)
		}
	}
	for _, c := range []string{"proxy", "gate", "ssh", "shield"} {
		if !chans[c] {
			t.Errorf("channel %s missing from the timeline", c)
		}
	}
}

func TestFilter(t *testing.T) {
	at := time.Date(2026, 12, 2, 11, 30, 0, 0, time.UTC)
	r := func(task, project string) audit.Record {
		return audit.Record{Time: at, Channel: "gate", Event: "clone", Outcome: "ok", Task: task, Project: project}
	}
	daemon, shield := Source{Path: "x"}, Source{Path: "y", Whole: true}
	for _, c := range []struct {
		name string
		f    Filter
		s    Source
		r    audit.Record
		want bool
	}{
		{"task matches", Filter{Task: "t1"}, daemon, r("t1", "demo"), true},
		{"other task", Filter{Task: "t1"}, daemon, r("t2", "demo"), false},
		{"project matches", Filter{Task: "t1", Project: "demo"}, daemon, r("t1", "demo"), true},
		{"other project", Filter{Task: "t1", Project: "demo"}, daemon, r("t1", "other"), false},
		{"no task in a daemon file", Filter{Task: "t1"}, daemon, r("", ""), false},
		{"no task in the task's shield file", Filter{Task: "t1"}, shield, r("", ""), true},
		{"other task in a shield file", Filter{Task: "t1"}, shield, r("t2", ""), false},
		{"since excludes older", Filter{Task: "t1", Since: at.Add(time.Second)}, daemon, r("t1", ""), false},
		{"since includes equal", Filter{Task: "t1", Since: at}, daemon, r("t1", ""), true},
	} {
		if got := c.f.Match(c.s, c.r); got != c.want {
			t.Errorf("%s: Match = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		in   string
		want time.Time
		bad  bool
	}{
		{"2026-12-02T11:30:00Z", time.Date(2026, 12, 2, 11, 30, 0, 0, time.UTC), false},
		{"2026-12-02T11:30:00.5+01:00", time.Date(2026, 12, 2, 10, 30, 0, 5e8, time.UTC), false},
		{"2026-12-01", time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), false},
		{"90m", now.Add(-90 * time.Minute), false},
		{"-5m", time.Time{}, true},
		{"yesterday", time.Time{}, true},
		{"", time.Time{}, true},
	} {
		got, err := ParseSince(c.in, now)
		if (err != nil) != c.bad || (!c.bad && !got.Equal(c.want)) {
			t.Errorf("ParseSince(%q) = %v, %v; want %v bad=%v", c.in, got, err, c.want, c.bad)
		}
	}
}

func TestWhatAndRow(t *testing.T) {
	lines := docExamples(t)
	for _, l := range lines {
		r, _ := audit.ParseLine([]byte(l))
		row := RowOf(r)
		if !strings.HasPrefix(row.What, r.Event) || !strings.HasPrefix(row.Outcome, r.Outcome) {
			t.Errorf("%s: row %+v", l, row)
		}
		if r.Reason != "" && !strings.Contains(row.Outcome, r.Reason) {
			t.Errorf("%s: reason missing from outcome %q", l, row.Outcome)
		}
	}
	for _, c := range []struct {
		r    audit.Record
		want string
	}{
		{audit.Record{Channel: "ssh", Event: "sign", Fields: map[string]any{"key_fingerprint": "SHA256:AAAA", "data_sha256": "00ff", "remote": "x"}}, "sign SHA256:AAAA"},
		{audit.Record{Channel: "proxy", Event: "request", Fields: map[string]any{"method": "GET", "upstream_host": "api.example.com", "path": "/v1/x", "status": float64(200)}}, "request GET api.example.com /v1/x 200"},
		{audit.Record{Channel: "new", Event: "e", Fields: map[string]any{"b": "2", "a": true, "remote": "x"}}, "e a=true b=2"},
		{audit.Record{Channel: "gate", Event: "push", Fields: map[string]any{"ref": "refs/heads/\x1b[31mmain\n"}}, "push refs/heads/?[31mmain?"},
		{audit.Record{Channel: "shield", Event: "refused", Fields: map[string]any{"proto": "tcp", "dst": "2001:db8::1", "dport": float64(443), "name": "x.example.test", "count": float64(1)}}, "refused tcp [2001:db8::1]:443 x.example.test"},
		{audit.Record{Channel: "shield", Event: "dns-refused", Fields: map[string]any{"name": "a.example.test", "qtype": "TXT", "count": float64(5)}}, "dns-refused a.example.test TXT x5"},
		{audit.Record{Channel: "shield", Event: "refused", Fields: map[string]any{"count": float64(0), "dropped": float64(9)}}, "refused count=0 dropped=9"},
		{audit.Record{Channel: "gate", Event: "push", Fields: map[string]any{"repo": "demo.git", "refs": []any{map[string]any{"ref": "refs/heads/x", "old": "0000000000", "new": "abcdef0123"}}}}, "push demo.git refs/heads/x 0000000..abcdef0"},
	} {
		if got := What(c.r); got != c.want {
			t.Errorf("What(%+v) = %q, want %q", c.r, got, c.want)
		}
	}
	hostile := RowOf(audit.Record{Channel: "ga\u009bte", Event: "push \x1b[2J", Outcome: "ok\x7f", Reason: "r\a"})
	if want := (Row{Time: hostile.Time, Channel: "ga?te", What: "push ?[2J", Outcome: "ok? (r?)"}); hostile != want {
		t.Errorf("hostile record row %+v, want %+v", hostile, want)
	}
}

func TestSummarize(t *testing.T) {
	at := time.Date(2026, 12, 2, 11, 30, 0, 0, time.UTC)
	recs := []audit.Record{
		{Time: at, Channel: "proxy", Event: "request", Outcome: "ok", Fields: map[string]any{"upstream_host": "a.example", "request_bytes": float64(10), "response_bytes": float64(100)}},
		{Time: at.Add(time.Second), Channel: "proxy", Event: "request", Outcome: "refused", Reason: "revoked", Fields: map[string]any{"upstream_host": "a.example"}},
		{Time: at.Add(2 * time.Second), Channel: "proxy", Event: "request", Outcome: "ok", Fields: map[string]any{"upstream_host": "b.example", "response_bytes": float64(5)}},
		{Time: at.Add(-time.Second), Channel: "shield", Event: "refused", Outcome: "refused", Reason: "not-allowlisted", Fields: map[string]any{"proto": "udp", "dst": "203.0.113.9", "dport": float64(53), "count": float64(412), "dropped": float64(37)}},
	}
	s := Summarize("t1", "demo", recs)
	if s.Records != 4 || s.Outcomes["proxy"]["ok"] != 2 || s.Outcomes["proxy"]["refused"] != 1 || s.Outcomes["shield"]["refused"] != 1 {
		t.Fatalf("counts %+v", s)
	}
	if !s.First.Equal(at.Add(-time.Second)) || !s.Last.Equal(at.Add(2*time.Second)) {
		t.Fatalf("first %v last %v", s.First, s.Last)
	}
	if len(s.Destinations) != 3 || s.Destinations[0] != (Count{"proxy a.example", 2}) {
		t.Fatalf("destinations %+v", s.Destinations)
	}
	if s.Bytes["proxy"]["response_bytes"] != 105 || s.Bytes["proxy"]["request_bytes"] != 10 {
		t.Fatalf("bytes %+v", s.Bytes)
	}
	if s.Attempts["shield"] != 412 || s.Unrecorded["shield"] != 37 {
		t.Fatalf("attempts %v unrecorded %v", s.Attempts, s.Unrecorded)
	}
	if len(s.Reasons) != 2 {
		t.Fatalf("reasons %+v", s.Reasons)
	}
	var b bytes.Buffer
	if err := WriteSummary(&b, s); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Task demo/t1: 4 records", "proxy       3  ok 2, refused 1", "proxy a.example", "response_bytes", "proxy revoked", "shield  412 (37 more not recorded)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, b.String())
		}
	}
}

// TestFollowHistoryThenLive: the history of every source comes first, in
// time order across sources, then records as they land, across a rotation.
func TestFollowHistoryThenLive(t *testing.T) {
	cfg := testConfig(t)
	lines := docExamples(t)
	dirs := layOut(t, cfg, lines)
	srcs := append(DaemonSources(cfg), ShieldSources(cfg, dirs, false)...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan audit.Record, 100)
	done := make(chan error, 1)
	go func() {
		done <- Follow(ctx, srcs, Filter{Task: "t1"}, func(r audit.Record) error { got <- r; return nil }, func(m string) { t.Errorf("warning %s", m) })
	}()
	next := func() audit.Record {
		select {
		case r := <-got:
			return r
		case <-time.After(30 * time.Second): // hang guard only
			t.Fatal("no record")
		}
		return audit.Record{}
	}
	want := 0
	for _, l := range lines {
		r, _ := audit.ParseLine([]byte(l))
		if r.Task == "t1" || (r.Channel == "shield" && r.Task == "") {
			want++
		}
	}
	var prev time.Time
	for i := 0; i < want; i++ {
		r := next()
		if r.Time.Before(prev) {
			t.Fatalf("history out of order at %s", r.Time)
		}
		prev = r.Time
	}
	w, err := audit.Open(cfg.AuditFile("gate"), audit.Options{MaxBytes: 400, Keep: 50})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		task := "t1"
		if i%2 == 1 {
			task = "t2" // not this task's: filtered out
		}
		if err := w.Write(audit.Record{Channel: "gate", Event: "fetch", Outcome: "ok", Task: task, Fields: map[string]any{"seq": i}}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 10; i += 2 {
		r := next()
		if n, _ := r.Fields["seq"].(float64); int(n) != i || r.Task != "t1" {
			t.Fatalf("live record %+v, want seq %d of t1", r, i)
		}
	}
	if _, err := os.Stat(cfg.AuditFile("gate") + ".1"); err != nil {
		t.Fatalf("the gate file did not rotate: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// FuzzTimeline appends an arbitrary line between documented records: the
// reader keeps every valid record, warns with file:line for a bad line, and
// no table row carries a control character.
func FuzzTimeline(f *testing.F) {
	f.Add([]byte(`{"v":1,"time":"2026-12-02T11:30:00Z","channel":"gate","event":"push","outcome":"ok","task":"t1","ref":"\u001b[2J"}`))
	f.Add([]byte("{torn"))
	// Found by this fuzz test: the event, channel, outcome and reason reached
	// the row unfiltered.
	f.Add([]byte(`{"v":1,"time":"2026-12-02T11:10:00Z","channel":"ga\u009bte","event":"push \u001b[2J","outcome":"ok\u007f","reason":"r\u0007","task":"t1"}`))
	f.Add([]byte(`{"v":1,"time":"2026-12-02T11:30:00Z","channel":"proxy","event":"request","outcome":"ok","task":"t1","status":1e300,"bytes":-1}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		if bytes.ContainsAny(line, "\n\r") {
			return
		}
		cfg := testConfig(t)
		lines := docExamples(t)
		p := cfg.AuditFile("gate")
		appendLine(t, p, lines[0])
		appendLine(t, p, string(line))
		appendLine(t, p, lines[0])
		var mu sync.Mutex
		var warns []string
		recs, err := Collect([]Source{{Path: p}}, Filter{Task: "t1"}, func(m string) { mu.Lock(); warns = append(warns, m); mu.Unlock() })
		if err != nil {
			t.Fatal(err)
		}
		_, perr := audit.ParseLine(line)
		if perr != nil && len(bytes.TrimSpace(line)) > 0 && (len(warns) != 1 || !strings.Contains(warns[0], p+":2:")) {
			t.Fatalf("bad line %q: warnings %v", line, warns)
		}
		if len(recs) < 2 {
			t.Fatalf("lost a valid record: %d", len(recs))
		}
		for _, r := range recs {
			row := FormatRow(r)
			if strings.ContainsFunc(row, func(c rune) bool { return c < 0x20 || c == 0x7f || (c >= 0x80 && c < 0xa0) }) {
				t.Fatalf("control character in row %q", row)
			}
		}
		_ = Summarize("t1", "", recs)
	})
}

func BenchmarkCollect(b *testing.B) {
	cfg := testConfig(b)
	w, err := audit.Open(cfg.AuditFile("proxy"), audit.Options{})
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 10000; i++ {
		task := "t1"
		if i%10 != 0 {
			task = "other"
		}
		if err := w.Write(audit.Record{Channel: "proxy", Event: "request", Outcome: "ok", Task: task, Project: "demo",
			Fields: map[string]any{"method": "GET", "upstream_host": "api.example.com", "path": "/v1/models", "status": 200}}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := Collect(DaemonSources(cfg), Filter{Task: "t1"}, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(10000, "records_read/op")
}

// TestShieldActions: the operator's actions of a task container's shield
// audit log are part of its timeline, after the fact and followed.
func TestShieldActions(t *testing.T) {
	cfg := testConfig(t)
	td := filepath.Join(cfg.StateDir, "tasks", "demo-t1")
	sd := config.ShieldStateDir(td)
	appendLine(t, filepath.Join(sd, ShieldFile), `{"v":1,"time":"2026-12-02T11:30:03Z","channel":"shield","event":"refused","outcome":"refused","reason":"not-allowlisted","container":"demo-t1","proto":"tcp","dst":"203.0.113.5","dport":443,"count":1}`)
	if err := shieldbundle.AppendAudit(sd, shieldbundle.Event{TS: "2026-12-02T11:30:02Z", Container: "demo-t1", Action: "allowed", Dest: "198.51.100.7"}); err != nil {
		t.Fatal(err)
	}
	srcs := ShieldSources(cfg, []string{td}, false)
	recs, err := Collect(srcs, Filter{Task: "t1"}, func(m string) { t.Errorf("warning %s", m) })
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].Event != "action" || recs[1].Event != "refused" {
		t.Fatalf("records %+v, want the action then the refusal", recs)
	}
	if w := What(recs[0]); w != "action allowed 198.51.100.7" {
		t.Fatalf("action row %q", w)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan audit.Record, 10)
	done := make(chan error, 1)
	go func() {
		done <- Follow(ctx, srcs, Filter{Task: "t1"}, func(r audit.Record) error { got <- r; return nil }, nil)
	}()
	next := func() audit.Record {
		select {
		case r := <-got:
			return r
		case <-time.After(30 * time.Second): // hang guard only
			t.Fatal("no record")
		}
		return audit.Record{}
	}
	if a, b := next(), next(); a.Event != "action" || b.Event != "refused" {
		t.Fatalf("history %s %s, want action then refused", a.Event, b.Event)
	}
	// A later action streams; a written action can only reach the stream
	// once the watch runs, so it is repeated until one arrives.
	for {
		if err := shieldbundle.AppendAudit(sd, shieldbundle.Event{Container: "demo-t1", Action: "denied", Dest: "198.51.100.7"}); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-got:
			if r.Event != "action" || r.Fields["action"] != "denied" {
				t.Fatalf("live record %+v", r)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}
