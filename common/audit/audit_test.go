package audit

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRecordRoundTrip(t *testing.T) {
	tm := time.Date(2026, 12, 2, 11, 30, 0, 123456789, time.UTC)
	r := Record{Time: tm, Channel: "gate", Event: "push", Outcome: "refused", Reason: "protected-ref",
		TokenPrefix: TokenPrefix("terok-g-0123456789abcdef"), Fields: map[string]any{"ref": "refs/heads/main", "event": "ignored"}}
	r.V = 1
	b, err := r.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseLine(b)
	if err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	if got.Event != "push" || got.Fields["ref"] != "refs/heads/main" || got.TokenPrefix != "terok-g-0123" || !got.Time.Equal(tm) {
		t.Fatalf("round trip: %+v from %s", got, b)
	}
	if _, ok := got.Fields["event"]; ok {
		t.Fatal("common member leaked into Fields")
	}
}

func TestParseLineRejects(t *testing.T) {
	for _, in := range []string{"", "{", "[]", `{"v":1}`, `{"v":1,"time":"x","channel":"gate","event":"e","outcome":"ok"}`} {
		if _, err := ParseLine([]byte(in)); err == nil {
			t.Errorf("ParseLine(%q) accepted", in)
		}
	}
}

// A line with several bad members names the same one every time (the first
// by name): Follow's warnings must not depend on map iteration order.
func TestParseLineErrorIsStable(t *testing.T) {
	line := []byte(`{"v":"9A","time":"","channel":7,"event":"e","outcome":"ok"}`)
	_, first := ParseLine(line)
	if first == nil || !strings.Contains(first.Error(), `member "channel"`) {
		t.Fatalf("error %v, want the first bad member by name (channel)", first)
	}
	for i := 0; i < 200; i++ {
		if _, err := ParseLine(line); err == nil || err.Error() != first.Error() {
			t.Fatalf("try %d: error %v, the first try gave %v", i, err, first)
		}
	}
}

func TestNilAndDisabled(t *testing.T) {
	var w *Writer
	if err := w.Write(Record{}); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "a", "x.jsonl")
	d, err := Open(p, Options{Disabled: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Write(Record{Channel: "gate", Event: "e", Outcome: "ok"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatalf("disabled writer created %s", p)
	}
}

func TestModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "audit")
	p := filepath.Join(dir, "gate.jsonl")
	w, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(Record{Channel: "gate", Event: "clone", Outcome: "ok"}); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{dir: 0o700, p: 0o600} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s mode %o, want %o", path, st.Mode().Perm(), want)
		}
	}
}

const helperEnv = "TEROK_AUDIT_HELPER"

// TestHelperProcess is the child of TestConcurrentProcessesRotation.
func TestHelperProcess(t *testing.T) {
	spec := os.Getenv(helperEnv)
	if spec == "" {
		t.Skip("helper only")
	}
	path := os.Getenv("TEROK_AUDIT_PATH")
	n, _ := strconv.Atoi(os.Getenv("TEROK_AUDIT_N"))
	w, err := Open(path, Options{MaxBytes: 4096, Keep: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if err := w.Write(Record{Channel: "proxy", Event: "request", Outcome: "ok",
			Fields: map[string]any{"proc": spec, "seq": i, "pad": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestConcurrentProcessesRotation(t *testing.T) {
	const procs, per = 8, 200
	path := filepath.Join(t.TempDir(), "proxy.jsonl")
	cmds := make([]*exec.Cmd, procs)
	for i := range cmds {
		c := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
		c.Env = append(os.Environ(), helperEnv+"="+strconv.Itoa(i), "TEROK_AUDIT_PATH="+path, "TEROK_AUDIT_N="+strconv.Itoa(per))
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
	files, _ := filepath.Glob(path + "*")
	seen := map[string]bool{}
	rotated := 0
	for _, f := range files {
		if filepath.Ext(f) == ".lock" {
			continue
		}
		if f != path {
			rotated++
		}
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		for ln := 1; sc.Scan(); ln++ {
			r, err := ParseLine(sc.Bytes())
			if err != nil {
				t.Fatalf("%s:%d torn record: %v", f, ln, err)
			}
			k := r.Fields["proc"].(string) + "/" + strconv.Itoa(int(r.Fields["seq"].(float64)))
			if seen[k] {
				t.Fatalf("duplicate %s", k)
			}
			seen[k] = true
		}
		_ = fh.Close()
	}
	if len(seen) != procs*per {
		t.Fatalf("%d records, want %d (lost records)", len(seen), procs*per)
	}
	if rotated == 0 {
		t.Fatal("no rotation happened")
	}
}

func FuzzParseLine(f *testing.F) {
	f.Add([]byte(`{"v":1,"time":"2026-12-02T11:30:00.123456789Z","channel":"gate","event":"push","outcome":"ok","ref":"x"}`))
	f.Add([]byte(`{"v":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseLine(b)
		if err != nil {
			return
		}
		out, err := r.MarshalJSON()
		if err != nil {
			t.Fatalf("marshal parsed record: %v", err)
		}
		if _, err := ParseLine(out); err != nil {
			t.Fatalf("re-parse %s: %v", out, err)
		}
	})
}

func BenchmarkWrite(b *testing.B) {
	w, err := Open(filepath.Join(b.TempDir(), "gate.jsonl"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	r := Record{Channel: "gate", Event: "fetch", Outcome: "ok", Fields: map[string]any{"repo": "x"}}
	for i := 0; i < b.N; i++ {
		if err := w.Write(r); err != nil {
			b.Fatal(err)
		}
	}
}

// TestWriteLines: a batch lands whole and reads back record by record; an
// unterminated batch is refused; a batch that would pass MaxBytes rotates
// first.
func TestWriteLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit", "proxy.jsonl")
	w, err := Open(path, Options{MaxBytes: 400, Keep: 2})
	if err != nil {
		t.Fatal(err)
	}
	line := `{"v":1,"time":"2026-12-02T11:30:00Z","channel":"proxy","event":"request","outcome":"ok"}` + "\n"
	if err := w.WriteLines([]byte(line + line + line)); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteLines([]byte(strings.TrimSuffix(line, "\n"))); err == nil {
		t.Error("unterminated batch accepted")
	}
	if err := w.WriteLines([]byte(line + line)); err != nil {
		t.Fatal(err)
	}
	cur, err := ReadFile(path, func(m string) { t.Error(m) })
	if err != nil {
		t.Fatal(err)
	}
	old, err := ReadFile(path+".1", func(m string) { t.Error(m) })
	if err != nil {
		t.Fatal(err)
	}
	if len(cur) != 2 || len(old) != 3 {
		t.Errorf("after rotation: %d current, %d rotated records; want 2 and 3", len(cur), len(old))
	}
	var nilW *Writer
	if err := nilW.WriteLines([]byte(line)); err != nil {
		t.Errorf("nil writer: %v", err)
	}
}

// benchLine is a typical gate push record: the common members plus a few
// channel fields, one of them nested.
const benchLine = `{"v":1,"time":"2026-12-02T11:30:00.123456789Z","channel":"gate","event":"push","outcome":"ok","project":"demo","task":"t-0001","token_prefix":"terok-g-0123","repo":"demo","bytes":18234,"refs":[{"ref":"refs/heads/main","old":"1111111111111111111111111111111111111111","new":"2222222222222222222222222222222222222222"}]}`

func BenchmarkParseLine(b *testing.B) {
	line := []byte(benchLine)
	b.ReportAllocs()
	b.SetBytes(int64(len(line)))
	for b.Loop() {
		if _, err := ParseLine(line); err != nil {
			b.Fatal(err)
		}
	}
}

// parseTwoPass is the reader before the one-pass UnmarshalJSON: a struct
// decode for the common members and a map decode for the rest. The fuzz
// test below holds the one-pass reader to its results.
func parseTwoPass(b []byte) (Record, error) {
	var c common
	if err := json.Unmarshal(b, &c); err != nil {
		return Record{}, err
	}
	var all map[string]any
	if err := json.Unmarshal(b, &all); err != nil {
		return Record{}, err
	}
	r := Record(c)
	for k, v := range all {
		if commonNames[k] {
			continue
		}
		if r.Fields == nil {
			r.Fields = map[string]any{}
		}
		r.Fields[k] = v
	}
	return r, nil
}

// foldsToCommon reports a key that encoding/json's struct decode would match
// to a common member case-insensitively, the one documented difference.
func foldsToCommon(b []byte) bool {
	var all map[string]json.RawMessage
	if json.Unmarshal(b, &all) != nil {
		return false
	}
	for k := range all {
		for c := range commonNames {
			if k != c && strings.EqualFold(k, c) {
				return true
			}
		}
	}
	return false
}

func FuzzUnmarshalMatchesTwoPass(f *testing.F) {
	f.Add([]byte(benchLine))
	f.Add([]byte(`{"v":1,"time":"2026-12-02T11:30:00Z","channel":"g\u00e9","event":"e","outcome":"ok","x":"\ud800","n":1e400}`))
	f.Add([]byte(`{"v":1.5,"channel":null,"time":null,"a":[1,{"b":null}],"a":true}`))
	f.Add([]byte(`{"v":"1","task":7}`))
	f.Add([]byte("{\"channel\":\"\xff\",\"k\":\"\xfe\"}"))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if foldsToCommon(b) {
			return
		}
		var got Record
		gotErr := got.UnmarshalJSON(b)
		want, wantErr := parseTwoPass(b)
		if (gotErr != nil) != (wantErr != nil) {
			t.Fatalf("%q: one pass err %v, two pass err %v", b, gotErr, wantErr)
		}
		if gotErr != nil {
			return
		}
		if !got.Time.Equal(want.Time) || got.Time.Location().String() != want.Time.Location().String() {
			t.Fatalf("%q: time %v, want %v", b, got.Time, want.Time)
		}
		got.Time, want.Time = time.Time{}, time.Time{}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q:\n one pass %#v\n two pass %#v", b, got, want)
		}
	})
}

// TestKeepFirst: a flood of records through a KeepFirst writer keeps the
// first file for good, rotates only the tail, stays within (1+Keep) ×
// MaxBytes, and Merge and Follow read the survivors in order: the first
// records, then the newest, with the middle rotated away.
func TestKeepFirst(t *testing.T) {
	for _, keep := range []int{1, 2, 3} {
		t.Run(strconv.Itoa(keep), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "refused.jsonl")
			const maxBytes = 1000
			w, err := Open(path, Options{MaxBytes: maxBytes, Keep: keep, KeepFirst: true})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var followed []int
			followDone := make(chan error, 1)
			caught := make(chan struct{})
			var mu sync.Mutex
			go func() {
				followDone <- FollowWith(ctx, path, FollowOptions{FromStart: true, Poll: time.Millisecond,
					CaughtUp: func() { close(caught) }}, func(r Record) error {
					mu.Lock()
					followed = append(followed, int(r.Fields["n"].(float64)))
					mu.Unlock()
					return nil
				})
			}()
			<-caught
			const n = 500
			t0 := time.Date(2026, 12, 3, 19, 0, 0, 0, time.UTC)
			for i := 0; i < n; i++ {
				if err := w.Write(Record{Time: t0.Add(time.Duration(i) * time.Millisecond), Channel: "shield", Event: "refused", Outcome: "refused", Fields: map[string]any{"n": i}}); err != nil {
					t.Fatal(err)
				}
				if i%25 == 0 { // let the follower keep up at times, as a real one polls
					time.Sleep(3 * time.Millisecond)
				}
			}
			var total int64
			for _, name := range append([]string{path}, rotatedNames(path, keep)...) {
				st, err := os.Stat(name)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				total += st.Size()
			}
			if _, err := os.Stat(path + "." + strconv.Itoa(keep+1)); err == nil {
				t.Errorf("%s.%d exists", path, keep+1)
			}
			if total > int64(1+keep)*maxBytes {
				t.Errorf("%d bytes on disk, bound %d", total, (1+keep)*maxBytes)
			}
			first, err := ReadFile(path+"."+strconv.Itoa(keep), nil)
			if err != nil || len(first) == 0 || first[0].Fields["n"] != float64(0) {
				t.Fatalf("first file %s.%d does not start with record 0: %v %v", path, keep, err, first)
			}
			recs, err := Merge(func(m string) { t.Error(m) }, path)
			if err != nil {
				t.Fatal(err)
			}
			got := make([]int, len(recs))
			for i, r := range recs {
				got[i] = int(r.Fields["n"].(float64))
			}
			// 0 .. k (the first file), a gap, then m .. n-1 (the tail).
			gap := 0
			for i := 1; i < len(got); i++ {
				switch d := got[i] - got[i-1]; {
				case d <= 0:
					t.Fatalf("out of order at %d: %v", i, got)
				case d > 1:
					gap++
				}
			}
			if got[0] != 0 || got[len(got)-1] != n-1 || gap != 1 {
				t.Fatalf("Merge: want the first records, one gap, the newest; got %v", got)
			}
			// The follower sees every record it was in time for, in order,
			// the first ones and the last ones included.
			deadline := time.Now().Add(10 * time.Second)
			for {
				mu.Lock()
				l := len(followed)
				last := -1
				if l > 0 {
					last = followed[l-1]
				}
				mu.Unlock()
				if last == n-1 || time.Now().After(deadline) {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			cancel()
			if err := <-followDone; err != nil {
				t.Fatal(err)
			}
			if len(followed) == 0 || followed[0] != 0 || followed[len(followed)-1] != n-1 {
				t.Fatalf("Follow: %v", followed)
			}
			for i := 1; i < len(followed); i++ {
				if followed[i] <= followed[i-1] {
					t.Fatalf("Follow out of order at %d: %v", i, followed)
				}
			}
		})
	}
}

func rotatedNames(path string, keep int) []string {
	var out []string
	for i := 1; i <= keep; i++ {
		out = append(out, path+"."+strconv.Itoa(i))
	}
	return out
}

// BenchmarkWriteRotating: Write through a file that rotates every 4 KiB
// (about 30 records), plain rotation against KeepFirst, whose rotation
// costs one more stat once the first file is kept.
func BenchmarkWriteRotating(b *testing.B) {
	for _, keepFirst := range []bool{false, true} {
		b.Run(fmt.Sprintf("keep-first=%v", keepFirst), func(b *testing.B) {
			w, err := Open(filepath.Join(b.TempDir(), "refused.jsonl"), Options{MaxBytes: 4 << 10, Keep: 2, KeepFirst: keepFirst})
			if err != nil {
				b.Fatal(err)
			}
			rec := Record{Channel: "shield", Event: "refused", Outcome: "refused", Fields: map[string]any{"proto": "udp", "dst": "198.51.100.20", "dport": 443, "count": 1}}
			b.ReportAllocs()
			for b.Loop() {
				if err := w.Write(rec); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestPrintable(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"refs/heads/main", "refs/heads/main"},
		{"a\x1b[2Jb", "a?[2Jb"},
		{"del\x7f", "del?"},
		{"csi\u009b31m", "csi?31m"},
		{"tab\tnl\n", "tab?nl?"},
		{"naïve ✓", "naïve ✓"},
		{"bad\xffutf8", "bad\uFFFDutf8"},
	} {
		if got := Printable(tt.in); got != tt.want {
			t.Errorf("Printable(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
