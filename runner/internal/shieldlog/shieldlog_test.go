package shieldlog

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/common/shieldbundle"
)

// Records as docs/audit.md (Channel shield) documents them.
var (
	t0      = time.Date(2026, 12, 3, 7, 0, 0, 0, time.UTC)
	refused = audit.Record{Time: t0.Add(1 * time.Second), Channel: "shield", Event: "refused", Outcome: "refused", Reason: "private-range", Container: "demo-t1",
		Fields: map[string]any{"proto": "tcp", "dst": "169.254.169.254", "dport": 80, "name": "rebind.example.test", "count": 1}}
	refused6 = audit.Record{Time: t0.Add(3 * time.Second), Channel: "shield", Event: "refused", Outcome: "refused", Reason: "not-allowlisted", Container: "demo-t1",
		Fields: map[string]any{"proto": "udp", "dst": "2001:db8:2::20", "dport": 9999, "count": 412, "dropped": 37}}
	dnsRef = audit.Record{Time: t0.Add(4 * time.Second), Channel: "shield", Event: "dns-refused", Outcome: "refused", Reason: "not-allowlisted", Container: "demo-t1",
		Fields: map[string]any{"name": "phone-home.example.test", "qtype": "TXT", "count": 1}}
)

func writeRecords(t *testing.T, dir string, opt audit.Options, recs ...audit.Record) {
	t.Helper()
	w, err := audit.Open(filepath.Join(dir, RefusedFile), opt)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
	}
}

func writeAction(t *testing.T, dir string, at time.Time, action, dest string) {
	t.Helper()
	if err := shieldbundle.AppendAudit(dir, shieldbundle.Event{TS: at.UTC().Format(shieldbundle.AuditTimeFormat), Container: "demo-t1", Action: action, Dest: dest}); err != nil {
		t.Fatal(err)
	}
}

func TestRead(t *testing.T) {
	dir := t.TempDir()
	// Tiny files: the older records end up in the rotated files.
	writeRecords(t, dir, audit.Options{MaxBytes: 300, Keep: 3}, refused, refused6, dnsRef)
	writeAction(t, dir, t0.Add(2*time.Second), "denied", "198.51.100.30")
	writeAction(t, dir, t0, "setup", "")
	if err := os.WriteFile(filepath.Join(dir, shieldbundle.FileAudit), append(mustRead(t, filepath.Join(dir, shieldbundle.FileAudit)), []byte("not json\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, RefusedFile+".1")); err != nil {
		t.Fatalf("no rotation happened: %v", err)
	}
	var warns []string
	all, err := Read(dir, Query{}, func(m string) { warns = append(warns, m) })
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range all {
		got = append(got, r.Event+"@"+r.Time.Sub(t0).String())
	}
	if want := "action@0s refused@1s action@2s refused@3s dns-refused@4s"; strings.Join(got, " ") != want {
		t.Errorf("order %v, want %s", got, want)
	}
	if len(warns) != 1 || !strings.Contains(warns[0], "audit.jsonl:3") {
		t.Errorf("warnings %v, want the corrupt line 3 of audit.jsonl", warns)
	}
	act := all[2]
	if act.Channel != "shield" || act.Outcome != "ok" || act.Container != "demo-t1" || act.Fields["action"] != "denied" || act.Fields["dest"] != "198.51.100.30" {
		t.Errorf("action record %+v", act)
	}
	for _, tt := range []struct {
		q    Query
		want int
	}{{Query{Since: t0.Add(2 * time.Second)}, 3}, {Query{Last: 2}, 2}, {Query{Since: t0.Add(1 * time.Second), Last: 10}, 4}, {Query{Since: t0.Add(time.Hour)}, 0}} {
		recs, err := Read(dir, tt.q, nil)
		if err != nil || len(recs) != tt.want {
			t.Errorf("Read(%+v) = %d records, %v; want %d", tt.q, len(recs), err, tt.want)
		}
	}
	if recs, err := Read(t.TempDir(), Query{}, nil); err != nil || len(recs) != 0 {
		t.Errorf("empty dir: %v %v", recs, err)
	}
}

func mustRead(t *testing.T, p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestWatch: records written after the start (across rotations of
// refused.jsonl) and new operator actions arrive; what was there before
// does not; cancel ends it with nil.
func TestWatch(t *testing.T) {
	dir := t.TempDir()
	writeRecords(t, dir, audit.Options{}, refused)
	writeAction(t, dir, t0, "setup", "")
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var got []audit.Record
	errc := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		close(started)
		errc <- Watch(ctx, dir, 20*time.Millisecond, func(r audit.Record) error {
			mu.Lock()
			got = append(got, r)
			mu.Unlock()
			return nil
		}, func(m string) { t.Errorf("warning: %s", m) })
	}()
	<-started
	// Both followers start at the end of their file when their goroutine
	// first runs, which may be late under load (a fixed sleep lost records
	// written before it). Probes, a refused record and an action to
	// probeDst, are written until one of each has come through: from then
	// on both followers read what lands.
	const probeDst = "203.0.113.99"
	probe := refused6
	probe.Fields = map[string]any{"proto": "udp", "dst": probeDst, "dport": 9, "count": 1}
	seen := func() (bool, bool) {
		mu.Lock()
		defer mu.Unlock()
		var r, a bool
		for _, x := range got {
			r = r || x.Event == "refused" && x.Fields["dst"] == probeDst
			a = a || x.Event == "action" && x.Fields["dest"] == probeDst
		}
		return r, a
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		r, a := seen()
		if !r {
			writeRecords(t, dir, audit.Options{MaxBytes: 1000, Keep: 20}, probe)
		}
		if !a {
			writeAction(t, dir, t0.Add(30*time.Second), "allowed", probeDst)
		}
		if r && a {
			break
		}
		if time.Now().After(deadline) { // a liveness bound only
			t.Fatalf("the followers did not start (refused probe seen %v, action probe seen %v)", r, a)
		}
	}
	const n = 40
	for i := 0; i < n; i++ {
		writeRecords(t, dir, audit.Options{MaxBytes: 1000, Keep: 20}, refused6)
	}
	writeAction(t, dir, t0.Add(time.Minute), "allowed", "198.51.100.10")
	deadline := time.Now().Add(10 * time.Second)
	count := func() (int, int) {
		mu.Lock()
		defer mu.Unlock()
		r, a := 0, 0
		for _, x := range got {
			if x.Fields["dst"] == probeDst || x.Fields["dest"] == probeDst {
				continue
			}
			if x.Event == "refused" {
				r++
			} else if x.Event == "action" {
				a++
			}
		}
		return r, a
	}
	for {
		r, a := count()
		if r >= n && a >= 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Watch: %v", err)
	}
	r, a := count()
	if r != n || a != 1 {
		t.Fatalf("got %d refused and %d actions, want %d and 1 (nothing from before the watch)", r, a, n)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, x := range got {
		if x.Fields["dst"] == probeDst || x.Fields["dest"] == probeDst {
			continue
		}
		if x.Event == "action" && x.Fields["dest"] != "198.51.100.10" {
			t.Errorf("old action streamed: %+v", x)
		}
		if x.Event == "refused" && x.Fields["dst"] != "2001:db8:2::20" {
			t.Errorf("old record streamed: %+v", x)
		}
	}
}

// Interactive mode's forwarded unlisted names (docs/audit.md, Channel
// shield): a tunnel's NXDOMAIN question and a name that resolved.
var (
	fwdNX = audit.Record{Time: t0, Channel: "shield", Event: "dns-forwarded", Outcome: "ok", Container: "demo-t1",
		Fields: map[string]any{"name": "zgf0ys1vdxq.exfil.example.test", "qtype": "A", "rcode": "NXDOMAIN", "count": 1}}
	fwdOK = audit.Record{Time: t0, Channel: "shield", Event: "dns-forwarded", Outcome: "ok", Container: "demo-t1",
		Fields: map[string]any{"name": "api.example.test", "qtype": "A", "rcode": "NOERROR", "addrs": []any{"203.0.113.40"}, "count": 2}}
)

func TestRow(t *testing.T) {
	act, _ := Action(shieldbundle.Event{TS: "2026-12-03T07:00:05+00:00", Container: "demo-t1", Action: "denied", Dest: "198.51.100.30"})
	ctl := dnsRef
	ctl.Fields = map[string]any{"name": "evil\x1b[2J.test", "qtype": "A", "count": 1}
	only := audit.Record{Time: t0, Channel: "shield", Event: "refused", Outcome: "refused", Fields: map[string]any{"count": 0, "dropped": 12}}
	dec := audit.Record{Time: t0, Channel: "shield", Event: "decision", Outcome: "ok", Reason: "decided", Container: "demo-t1",
		Fields: map[string]any{"verdict": "once", "proto": "tcp", "dst": "203.0.113.40", "dport": 443, "name": "api.example.test", "count": 1}}
	for _, tt := range []struct {
		r    audit.Record
		want []string
	}{
		{refused, []string{"2026-12-03T07:00:01.000Z", "refused", "tcp 169.254.169.254:80 (rebind.example.test)", "private-range", "1"}},
		{refused6, []string{"udp [2001:db8:2::20]:9999", "not-allowlisted", "412 +37 dropped"}},
		{dnsRef, []string{"dns-refused", "TXT phone-home.example.test"}},
		{act, []string{"action", "denied 198.51.100.30", "ok"}},
		{ctl, []string{"A evil?[2J.test"}},
		{only, []string{"(attempts not described)", "0 +12 dropped"}},
		{dec, []string{"decision", "once tcp 203.0.113.40:443 (api.example.test)", "decided", "1"}},
		{fwdNX, []string{"dns-forwarded", "A zgf0ys1vdxq.exfil.example.test NXDOMAIN", "ok", "1"}},
		{fwdOK, []string{"dns-forwarded", "A api.example.test NOERROR -> 203.0.113.40"}},
	} {
		row := Row(tt.r)
		for _, w := range tt.want {
			if !strings.Contains(row, w) {
				t.Errorf("Row = %q, lacks %q", row, w)
			}
		}
	}
	hostile := Row(audit.Record{Time: t0, Channel: "shield", Event: "x\x1b[2J", Reason: "r\x7f\u009b", Fields: map[string]any{"count": "1\a"}})
	if strings.ContainsFunc(hostile, func(c rune) bool { return c < 0x20 || c == 0x7f || (c >= 0x80 && c < 0xa0) }) {
		t.Errorf("control character in row %q", hostile)
	}
	if !strings.HasPrefix(Header(), "TIME") {
		t.Errorf("header %q", Header())
	}
}
