package audit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var errStop = errors.New("stop")

// following runs FollowWith in a goroutine; the test reads records from the
// returned channel and stops it with cancel.
type following struct {
	recs   chan Record
	warns  chan string
	caught chan struct{}
	done   chan error
	cancel context.CancelFunc
}

func startFollow(t *testing.T, path string, fromStart bool) *following {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &following{recs: make(chan Record, 100000), warns: make(chan string, 1000),
		caught: make(chan struct{}), done: make(chan error, 1), cancel: cancel}
	var once sync.Once
	go func() {
		f.done <- FollowWith(ctx, path, FollowOptions{FromStart: fromStart, Poll: 5 * time.Millisecond,
			Warn:     func(m string) { f.warns <- m },
			CaughtUp: func() { once.Do(func() { close(f.caught) }) }},
			func(r Record) error { f.recs <- r; return nil })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-f.done; err != nil {
			t.Errorf("Follow: %v", err)
		}
	})
	return f
}

// next waits for one record; the deadline only guards against a hang.
func (f *following) next(t *testing.T) Record {
	t.Helper()
	select {
	case r := <-f.recs:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("no record arrived")
	}
	return Record{}
}

func (f *following) warn(t *testing.T) string {
	t.Helper()
	select {
	case w := <-f.warns:
		return w
	case <-time.After(30 * time.Second):
		t.Fatal("no warning arrived")
	}
	return ""
}

func (f *following) waitCaught(t *testing.T) {
	t.Helper()
	select {
	case <-f.caught:
	case <-time.After(30 * time.Second):
		t.Fatal("follow never caught up")
	}
}

func rec(event string, seq int) Record {
	return Record{Channel: "gate", Event: event, Outcome: "ok", Fields: map[string]any{"seq": seq}}
}

func seqOf(r Record) int { n, _ := r.Fields["seq"].(float64); return int(n) }

func mustWrite(t *testing.T, w *Writer, r Record) {
	t.Helper()
	if err := w.Write(r); err != nil {
		t.Fatal(err)
	}
}

func TestFollowFromStartThenNew(t *testing.T) {
	p := filepath.Join(t.TempDir(), "gate.jsonl")
	w, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, w, rec("clone", 1))
	f := startFollow(t, p, true)
	if got := seqOf(f.next(t)); got != 1 {
		t.Fatalf("first record seq %d, want 1", got)
	}
	f.waitCaught(t)
	mustWrite(t, w, rec("push", 2))
	if r := f.next(t); seqOf(r) != 2 || r.Event != "push" {
		t.Fatalf("second record %+v", r)
	}
}

func TestFollowSkipsExistingWithoutFromStart(t *testing.T) {
	p := filepath.Join(t.TempDir(), "gate.jsonl")
	w, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, w, rec("clone", 1))
	f := startFollow(t, p, false)
	f.waitCaught(t)
	mustWrite(t, w, rec("push", 2))
	if got := seqOf(f.next(t)); got != 2 {
		t.Fatalf("got seq %d, want only the new record 2", got)
	}
}

func TestFollowFileAppearsLater(t *testing.T) {
	p := filepath.Join(t.TempDir(), "audit", "gate.jsonl") // not even the directory exists
	f := startFollow(t, p, false)
	f.waitCaught(t)
	if _, err := os.Stat(p + ".lock"); !os.IsNotExist(err) {
		t.Fatal("the reader created the lock file")
	}
	w, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, w, rec("clone", 7))
	if got := seqOf(f.next(t)); got != 7 {
		t.Fatalf("got seq %d, want 7 from the file created after Follow started", got)
	}
}

func TestFollowCorruptLineWarnsFileLine(t *testing.T) {
	p := filepath.Join(t.TempDir(), "gate.jsonl")
	w, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, w, rec("clone", 1))
	fh, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteString("{not json\n"); err != nil {
		t.Fatal(err)
	}
	_ = fh.Close()
	mustWrite(t, w, rec("push", 3))
	f := startFollow(t, p, true)
	if a, b := seqOf(f.next(t)), seqOf(f.next(t)); a != 1 || b != 3 {
		t.Fatalf("records %d %d, want 1 3 around the corrupt line", a, b)
	}
	if w := f.warn(t); !strings.Contains(w, p+":2:") {
		t.Fatalf("warning %q does not name %s:2", w, p)
	}
}

func TestFollowTruncation(t *testing.T) {
	p := filepath.Join(t.TempDir(), "gate.jsonl")
	w, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		mustWrite(t, w, rec("fetch", i))
	}
	f := startFollow(t, p, true)
	for i := 1; i <= 3; i++ {
		f.next(t)
	}
	f.waitCaught(t)
	if err := os.Truncate(p, 0); err != nil {
		t.Fatal(err)
	}
	if w := f.warn(t); !strings.Contains(w, "truncated") {
		t.Fatalf("warning %q, want truncated", w)
	}
	mustWrite(t, w, rec("fetch", 4))
	if got := seqOf(f.next(t)); got != 4 {
		t.Fatalf("after truncation got seq %d, want 4", got)
	}
}

func TestFollowSingleRotation(t *testing.T) {
	p := filepath.Join(t.TempDir(), "gate.jsonl")
	w, err := Open(p, Options{MaxBytes: 300, Keep: 100})
	if err != nil {
		t.Fatal(err)
	}
	f := startFollow(t, p, false)
	f.waitCaught(t)
	for i := 1; i <= 20; i++ {
		mustWrite(t, w, rec("fetch", i))
	}
	if _, err := os.Stat(p + ".2"); err != nil {
		t.Fatalf("test wrote too little to rotate twice: %v", err)
	}
	for i := 1; i <= 20; i++ {
		if got := seqOf(f.next(t)); got != i {
			t.Fatalf("record %d has seq %d (lost or reordered across rotation)", i, got)
		}
	}
}

// TestFollowHelperWriter is the child of TestFollowConcurrentRotation.
func TestFollowHelperWriter(t *testing.T) {
	spec := os.Getenv("TEROK_FOLLOW_HELPER")
	if spec == "" {
		t.Skip("helper only")
	}
	n, _ := strconv.Atoi(os.Getenv("TEROK_AUDIT_N"))
	w, err := Open(os.Getenv("TEROK_AUDIT_PATH"), Options{MaxBytes: 4096, Keep: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if err := w.Write(Record{Channel: "proxy", Event: "request", Outcome: "ok",
			Fields: map[string]any{"proc": spec, "seq": i, "pad": strings.Repeat("x", 40)}}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFollowConcurrentRotation follows a file that 8 processes append to
// while it rotates many times: every record arrives exactly once, none torn.
func TestFollowConcurrentRotation(t *testing.T) {
	const procs, per = 8, 300
	p := filepath.Join(t.TempDir(), "proxy.jsonl")
	w, err := Open(p, Options{MaxBytes: 4096, Keep: 1000})
	if err != nil {
		t.Fatal(err)
	}
	// Records before Follow starts, so FromStart has history to read while
	// the writers rotate it away.
	for i := 0; i < 50; i++ {
		mustWrite(t, w, Record{Channel: "proxy", Event: "request", Outcome: "ok", Fields: map[string]any{"proc": "pre", "seq": i}})
	}
	seen := map[string]int{}
	var warns []string
	var mu sync.Mutex
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // hang guard only
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- FollowWith(ctx, p, FollowOptions{FromStart: true, Poll: time.Millisecond,
			Warn: func(m string) { mu.Lock(); warns = append(warns, m); mu.Unlock() }},
			func(r Record) error {
				if r.Event == "end" {
					return errStop
				}
				seen[fmt.Sprintf("%v/%v", r.Fields["proc"], r.Fields["seq"])]++
				return nil
			})
	}()
	cmds := make([]*exec.Cmd, procs)
	for i := range cmds {
		c := exec.Command(os.Args[0], "-test.run=^TestFollowHelperWriter$")
		c.Env = append(os.Environ(), "TEROK_FOLLOW_HELPER="+strconv.Itoa(i), "TEROK_AUDIT_PATH="+p, "TEROK_AUDIT_N="+strconv.Itoa(per))
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		cmds[i] = c
	}
	for _, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("helper: %v", err)
		}
	}
	// The end marker is written after every other record, so it is the last
	// record the follower sees if nothing is reordered across files.
	mustWrite(t, w, Record{Channel: "proxy", Event: "end", Outcome: "ok"})
	if err := <-done; !errors.Is(err, errStop) {
		t.Fatalf("Follow ended with %v before the end marker", err)
	}
	rotated, _ := filepath.Glob(p + ".*[0-9]")
	if len(rotated) < 5 {
		t.Fatalf("only %d rotations, the test did not exercise rotation", len(rotated))
	}
	if len(seen) != procs*per+50 {
		t.Errorf("%d distinct records, want %d (lost records)", len(seen), procs*per+50)
	}
	for k, n := range seen {
		if n != 1 {
			t.Errorf("record %s seen %d times", k, n)
		}
	}
	if len(warns) > 0 {
		t.Errorf("warnings (torn or corrupt records): %v", warns)
	}
}

func TestMergeOrdersAcrossFilesAndRotations(t *testing.T) {
	dir := t.TempDir()
	gate, proxy := filepath.Join(dir, "gate.jsonl"), filepath.Join(dir, "proxy.jsonl")
	base := time.Date(2026, 12, 2, 11, 0, 0, 0, time.UTC)
	gw, err := Open(gate, Options{MaxBytes: 200, Keep: 10})
	if err != nil {
		t.Fatal(err)
	}
	pw, err := Open(proxy, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		w := gw
		r := rec("fetch", i)
		if i%2 == 1 {
			w = pw
			r.Channel, r.Event = "proxy", "request"
		}
		r.Time = base.Add(time.Duration(i) * time.Second)
		mustWrite(t, w, r)
	}
	if _, err := os.Stat(gate + ".1"); err != nil {
		t.Fatalf("gate did not rotate: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "torn.jsonl"), []byte(`{"v":1,"time":"2026-12-02T11:00:00Z"`), 0o600); err != nil {
		t.Fatal(err)
	}
	var warns []string
	got, err := Merge(func(m string) { warns = append(warns, m) }, gate, proxy, filepath.Join(dir, "missing.jsonl"), filepath.Join(dir, "torn.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 10 {
		t.Fatalf("%d records, want 10", len(got))
	}
	for i, r := range got {
		if seqOf(r) != i {
			t.Fatalf("position %d holds seq %d: not in time order", i, seqOf(r))
		}
	}
	if len(warns) != 1 || !strings.Contains(warns[0], "torn.jsonl:1") {
		t.Fatalf("warnings %v, want one torn record at torn.jsonl:1", warns)
	}
}

// FuzzFollowFeed checks that the line splitting of Follow gives the same
// records and warnings however the bytes arrive in reads.
func FuzzFollowFeed(f *testing.F) {
	f.Add([]byte(`{"v":1,"time":"2026-12-02T11:30:00Z","channel":"gate","event":"push","outcome":"ok"}`+"\n{x\n\n"), 7)
	f.Add([]byte("\n\n\n"), 1)
	// Two bad members: the error named must not depend on map order.
	f.Add([]byte(`{"v":"9A","time":""}`+"\n"), 7)
	f.Fuzz(func(t *testing.T, b []byte, cut int) {
		run := func(parts ...[]byte) (recs []string, warns []string) {
			fl := &follower{opt: FollowOptions{Warn: func(m string) { warns = append(warns, m) }},
				fn: func(r Record) error { out, _ := r.MarshalJSON(); recs = append(recs, string(out)); return nil }}
			tf := &tailFile{name: "x"}
			for _, p := range parts {
				if err := fl.feed(tf, p); err != nil {
					t.Fatal(err)
				}
			}
			return recs, warns
		}
		if cut < 0 {
			cut = -cut
		}
		if len(b) > 0 {
			cut %= len(b) + 1
		} else {
			cut = 0
		}
		r1, w1 := run(b)
		r2, w2 := run(b[:cut], b[cut:])
		if strings.Join(r1, "\n") != strings.Join(r2, "\n") || strings.Join(w1, "\n") != strings.Join(w2, "\n") {
			t.Fatalf("split at %d changed the result:\n%v %v\n%v %v", cut, r1, w1, r2, w2)
		}
	})
}

func BenchmarkMerge(b *testing.B) {
	p := filepath.Join(b.TempDir(), "proxy.jsonl")
	w, err := Open(p, Options{MaxBytes: 1 << 20, Keep: 10})
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 10000; i++ {
		if err := w.Write(Record{Channel: "proxy", Event: "request", Outcome: "ok", Task: "t1",
			Fields: map[string]any{"method": "GET", "path": "/v1/models", "status": 200}}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := Merge(nil, p); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(10000, "records/op")
}
