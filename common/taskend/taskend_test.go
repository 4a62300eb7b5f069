package taskend

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		name, in string
		ok       bool
	}{
		{"full", `{"container":"p-t1","ended":"2026-12-03T12:00:00.5Z","reason":"stopped","id":"abc"}`, true},
		{"no id", `{"container":"p-t1","ended":"2026-12-03T12:00:00Z","reason":"exited"}`, true},
		{"no container", `{"ended":"2026-12-03T12:00:00Z","reason":"exited"}`, false},
		{"no ended", `{"container":"p","reason":"exited"}`, false},
		{"no reason", `{"container":"p","ended":"2026-12-03T12:00:00Z"}`, false},
		{"bad name", `{"container":"../x","ended":"2026-12-03T12:00:00Z","reason":"exited"}`, false},
		{"bad time", `{"container":"p","ended":"yesterday","reason":"exited"}`, false},
		{"bad reason", `{"container":"p","ended":"2026-12-03T12:00:00Z","reason":"Exited!"}`, false},
		{"not json", `nope`, false},
		{"array", `[]`, false},
		{"huge", `{"container":"p","ended":"2026-12-03T12:00:00Z","reason":"exited","id":"` + strings.Repeat("a", maxRecord) + `"}`, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.in))
			if (err == nil) != c.ok {
				t.Fatalf("Parse(%s): err %v, want ok %v", c.in, err, c.ok)
			}
		})
	}
}

func TestRecordAndWatch(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "task-ends")
	w := NewWatcher(dir, nil)
	bound := time.Now()
	if _, gone := w.Gone("p-t1", bound); gone {
		t.Fatal("gone before any end (no directory)")
	}
	if err := Record(dir, End{Container: "p-t1", Reason: ReasonStopped, ID: "abc"}); err != nil {
		t.Fatal(err)
	}
	e, gone := w.Gone("p-t1", bound)
	if !gone || e.Reason != ReasonStopped || e.ID != "abc" {
		t.Fatalf("after the end: %+v %v", e, gone)
	}
	if _, gone := w.Gone("p-t2", bound); gone {
		t.Fatal("another container is gone")
	}
	if _, gone := w.Gone("p-t1", time.Time{}); gone {
		t.Fatal("an unbound token is gone")
	}
	// A token bound after the end (a new run of the same name) lives.
	if _, gone := w.Gone("p-t1", time.Now().Add(time.Millisecond)); gone {
		t.Fatal("a token bound after the end is gone")
	}
	// The second end within the same clock tick is seen too, after at
	// most reread.
	later := time.Now()
	if err := Record(dir, End{Container: "p-t1", Reason: ReasonExited, Ended: later.Add(time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(reread + 10*time.Millisecond)
	if e, gone := w.Gone("p-t1", later); !gone || e.Reason != ReasonExited {
		t.Fatalf("second end not seen: %+v %v", e, gone)
	}
	// An older end never replaces a later one.
	if err := Record(dir, End{Container: "p-t1", Reason: ReasonStopped, Ended: bound.Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if e, gone := w.Gone("p-t1", later); !gone || e.Reason != ReasonExited {
		t.Fatalf("older end replaced the later one: %+v %v", e, gone)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("directory mode: %v %v", fi, err)
	}
}

func TestWatcherSkipsBadRecords(t *testing.T) {
	dir := t.TempDir()
	since := time.Now() // within StartLease: only end records make a token gone
	for name, body := range map[string]string{
		"p-a.json": `{"container":"p-a","ended":"` + time.Now().UTC().Format(time.RFC3339Nano) + `","reason":"stopped"}`,
		"p-b.json": `garbage`,
		"p-c.json": `{"container":"p-other","ended":"` + time.Now().UTC().Format(time.RFC3339Nano) + `","reason":"stopped"}`,
		".lock":    ``,
		"p-d.txt":  `{"container":"p-d","ended":"` + time.Now().UTC().Format(time.RFC3339Nano) + `","reason":"stopped"}`,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	w := NewWatcher(dir, nil)
	for c, want := range map[string]bool{"p-a": true, "p-b": false, "p-c": false, "p-other": false, "p-d": false} {
		if _, gone := w.Gone(c, since); gone != want {
			t.Errorf("Gone(%s) = %v, want %v", c, gone, want)
		}
	}
}

func TestRecordRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	for _, e := range []End{{Container: "../x", Reason: ReasonStopped}, {Container: "p", Reason: "Bad Reason"}, {Container: "", Reason: ReasonStopped}} {
		if err := Record(dir, e); err == nil {
			t.Errorf("Record(%+v) accepted", e)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("files written for bad input: %v", ents)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"container":"p-t1","ended":"2026-12-03T12:00:00.5Z","reason":"stopped","id":"abc"}`))
	f.Add([]byte(`{"container":"../x","ended":"2026-12-03T12:00:00Z","reason":"exited"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Parse(data)
		if err != nil {
			return
		}
		if e.Container == "" || e.Ended.IsZero() || !validReason(e.Reason) || strings.ContainsAny(e.Container, "/\x00") {
			t.Fatalf("accepted %+v from %q", e, data)
		}
	})
}

func BenchmarkGone(b *testing.B) {
	dir := b.TempDir()
	for i := 0; i < 200; i++ {
		if err := Record(dir, End{Container: "p-t" + strings.Repeat("x", i%5) + string(rune('a'+i%26)), Reason: ReasonStopped, Ended: time.Now().Add(-time.Hour)}); err != nil {
			b.Fatal(err)
		}
	}
	w := NewWatcher(dir, nil)
	w.now = func() time.Time { return time.Now().Add(time.Hour) } // past the settle window
	since := time.Now()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w.Gone("p-ta", since)
	}
}

// BenchmarkGoneSettling is a lookup within the settle window after a
// change: the records (200 here) are re-read on every lookup.
func BenchmarkGoneSettling(b *testing.B) {
	dir := b.TempDir()
	for i := 0; i < 200; i++ {
		if err := Record(dir, End{Container: "p-t" + strings.Repeat("x", i%5) + string(rune('a'+i%26)), Reason: ReasonStopped, Ended: time.Now().Add(-time.Hour)}); err != nil {
			b.Fatal(err)
		}
	}
	w := NewWatcher(dir, nil)
	// Always inside the window and past reread: every lookup re-reads.
	var tick time.Time
	w.now = func() time.Time { tick = tick.Add(time.Second); return tick }
	since := time.Now()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w.Gone("p-ta", since)
	}
}
