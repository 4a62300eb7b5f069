package gatetokens

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"terok.dev/sandbox/common/names"
	"testing"
	"time"

	"terok.dev/sandbox/common/internal/proctest"
	"terok.dev/sandbox/common/tokenid"
)

func TestMain(m *testing.M) {
	proctest.Main(m, proctest.Workers{
		"create": func() error {
			s := Open(os.Getenv("TOKENS_FILE"), os.Getenv("TOKENS_FILE")+".lock", nil)
			for i := 0; i < 100; i++ {
				if _, err := s.Create(names.TaskRef{Project: "proj", Task: fmt.Sprintf("w%s-%d", os.Getenv("WORKER_INDEX"), i)}); err != nil {
					return err
				}
			}
			return nil
		},
	})
}

func newStore(t *testing.T) *Store {
	dir := filepath.Join(t.TempDir(), "gate")
	return Open(filepath.Join(dir, "tokens.json"), filepath.Join(dir, "tokens.json.lock"), nil)
}

// The spec's own example, written by hand, must read back.
func TestReadsFileWrittenFromSpec(t *testing.T) {
	s := newStore(t)
	os.MkdirAll(filepath.Dir(s.Path()), 0o700)
	spec := `{
  "terok-g-0123456789abcdef0123456789abcdef": {"project": "myproj", "task": "42"},
  "terok-g-fedcba9876543210fedcba9876543210": {"project": "other", "task": "7", "note": "kept"}
}`
	if err := os.WriteFile(s.Path(), []byte(spec), 0o600); err != nil {
		t.Fatal(err)
	}
	e, ok := s.Lookup("terok-g-0123456789abcdef0123456789abcdef")
	if !ok || e.Project != "myproj" || e.Task != "42" {
		t.Fatalf("Lookup = %+v %v", e, ok)
	}
	// A rewrite keeps order, extra members and appends the new token last.
	tok, err := s.Create(names.TaskRef{Project: "third", Task: "1"})
	if err != nil {
		t.Fatal(err)
	}
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 || list[0].Project != "myproj" || list[1].Project != "other" || list[2].Token != tok {
		t.Fatalf("order lost: %+v", list)
	}
	data, _ := os.ReadFile(s.Path())
	if !strings.Contains(string(data), `"note": "kept"`) {
		t.Errorf("extra member dropped:\n%s", data)
	}
	if !strings.HasPrefix(string(data), "{\n  \"terok-g-") || !strings.HasSuffix(string(data), "}\n") {
		t.Errorf("not 2-space indented with trailing newline:\n%s", data)
	}
}

func TestCreateRevoke(t *testing.T) {
	s := newStore(t)
	a, err := s.Create(names.TaskRef{Project: "p", Task: "1"})
	if err != nil {
		t.Fatal(err)
	}
	if !tokenid.Valid(tokenid.GatePrefix, a) || len(a) != 40 {
		t.Errorf("bad token %q", a)
	}
	b, _ := s.Create(names.TaskRef{Project: "p", Task: "2"})
	c, _ := s.Create(names.TaskRef{Project: "p", Task: "1"})
	fi, err := os.Stat(s.Path())
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v err %v", fi.Mode(), err)
	}
	n, err := s.Revoke(names.TaskRef{Project: "p", Task: "1"})
	if err != nil || n != 2 {
		t.Fatalf("Revoke = %d, %v", n, err)
	}
	if _, ok := s.Lookup(a); ok {
		t.Error("revoked token still valid")
	}
	if _, ok := s.Lookup(c); ok {
		t.Error("revoked token still valid")
	}
	if e, ok := s.Lookup(b); !ok || e.Task != "2" {
		t.Error("other task's token lost")
	}
	// Revoking nothing must not rewrite the file.
	before, _ := os.Stat(s.Path())
	time.Sleep(10 * time.Millisecond)
	if n, err := s.Revoke(names.TaskRef{Project: "p", Task: "nope"}); n != 0 || err != nil {
		t.Fatalf("Revoke = %d, %v", n, err)
	}
	after, _ := os.Stat(s.Path())
	if !os.SameFile(before, after) || !before.ModTime().Equal(after.ModTime()) {
		t.Error("file rewritten although nothing matched")
	}
}

func TestRevokeMissingFileIsNoop(t *testing.T) {
	s := newStore(t)
	if n, err := s.Revoke(names.TaskRef{Project: "p", Task: "1"}); n != 0 || err != nil {
		t.Fatalf("Revoke = %d, %v", n, err)
	}
	if _, err := os.Stat(s.Path()); !os.IsNotExist(err) {
		t.Error("revoke created the file")
	}
}

func TestCreateRejectsBadIDs(t *testing.T) {
	s := newStore(t)
	for _, c := range []struct{ p, t string }{{"", "1"}, {"../x", "1"}, {"a/b", "1"}, {".hidden", "1"}, {"p", ""}, {"p", "a b"}, {"p", "a\nb"},
		{"p", "../x"}, {"p", "a/b"}, {"p", "-x"}, {"p", "."}, {"-p", "1"}, {"p", strings.Repeat("t", 129)}} {
		if _, err := s.Create(names.TaskRef{Project: c.p, Task: c.t}); err == nil || !strings.Contains(err.Error(), "create gate token: invalid") {
			t.Errorf("Create(%q, %q): %v", c.p, c.t, err)
		}
	}
	if _, err := os.Stat(s.Path()); !os.IsNotExist(err) {
		t.Error("a rejected id touched the tokens file")
	}
}

func TestTolerantParse(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		n       int
		skipped int
		err     bool
	}{
		{"empty object", `{}`, 0, 0, false},
		{"not json", `{"a":`, 0, 0, true},
		{"array", `[1,2]`, 0, 0, true},
		{"value not object", `{"t1": "x", "t2": {"project":"p","task":"1"}}`, 1, 1, false},
		{"project not string", `{"t1": {"project": 1, "task": "1"}}`, 0, 1, false},
		{"task missing", `{"t1": {"project": "p"}}`, 0, 1, false},
		{"null value", `{"t1": null}`, 0, 1, false},
		{"expires", `{"t1": {"project": "p", "task": "1", "expires": "2026-12-03T16:00:00Z"}}`, 1, 0, false},
		{"expires null", `{"t1": {"project": "p", "task": "1", "expires": null}}`, 1, 0, false},
		{"expires not a time", `{"t1": {"project": "p", "task": "1", "expires": "tomorrow"}}`, 0, 1, false},
		{"expires a number", `{"t1": {"project": "p", "task": "1", "expires": 1796313600}}`, 0, 1, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, sk, err := Parse([]byte(tc.data))
			if (err != nil) != tc.err || len(e) != tc.n || sk != tc.skipped {
				t.Errorf("Parse = %d entries, %d skipped, err %v", len(e), sk, err)
			}
		})
	}
}

// TestCreateExpiring: the expiry is stored as the entry's expires member
// (RFC 3339, UTC, whole seconds), read back, and Expired tells it.
func TestCreateExpiring(t *testing.T) {
	dir := t.TempDir()
	s := Open(filepath.Join(dir, "tokens.json"), filepath.Join(dir, "tokens.json.lock"), nil)
	at := time.Date(2026, 12, 3, 16, 0, 0, 500, time.FixedZone("X", 3600))
	tok, err := s.CreateExpiring(names.TaskRef{Project: "p", Task: "1"}, at)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := s.Create(names.TaskRef{Project: "p", Task: "2"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(s.Path())
	if !strings.Contains(string(b), `"expires": "2026-12-03T15:00:00Z"`) {
		t.Errorf("file %s lacks the expires member", b)
	}
	entries, err := s.List()
	if err != nil || len(entries) != 2 {
		t.Fatalf("List = %v, %v", entries, err)
	}
	for _, tc := range []struct {
		e             Entry
		tok           string
		before, after bool
	}{
		{entries[0], tok, false, true},
		{entries[1], plain, false, false},
	} {
		if tc.e.Token != tc.tok {
			t.Fatalf("entry %s, want %s", tc.e.Token, tc.tok)
		}
		if got := tc.e.Expired(at.Add(-time.Second)); got != tc.before {
			t.Errorf("%s expired before: %v", tc.tok[:12], got)
		}
		if got := tc.e.Expired(at); got != tc.after {
			t.Errorf("%s expired at: %v", tc.tok[:12], got)
		}
	}
}

func TestCorruptFileIsPreserved(t *testing.T) {
	s := newStore(t)
	os.MkdirAll(filepath.Dir(s.Path()), 0o700)
	garbage := []byte("{ this is not json")
	os.WriteFile(s.Path(), garbage, 0o600)
	if _, ok := s.Lookup("terok-g-0123456789abcdef0123456789abcdef"); ok {
		t.Error("corrupt file validated a token")
	}
	tok, err := s.Create(names.TaskRef{Project: "p", Task: "1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Lookup(tok); !ok {
		t.Error("new token not readable")
	}
	copies, _ := filepath.Glob(s.Path() + ".corrupt-*")
	if len(copies) != 1 {
		t.Fatalf("corrupt copies: %v", copies)
	}
	if data, _ := os.ReadFile(copies[0]); string(data) != string(garbage) {
		t.Errorf("copy holds %q", data)
	}
}

// 8 processes x 100 creations at once: all 800 tokens land, and a reader
// polling meanwhile never sees a file that is not valid JSON.
func TestConcurrentProcessesLoseNothing(t *testing.T) {
	s := newStore(t)
	os.MkdirAll(filepath.Dir(s.Path()), 0o700)
	var stop atomic.Bool
	var reads, bad atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			data, err := os.ReadFile(s.Path())
			if err != nil {
				continue
			}
			reads.Add(1)
			if !json.Valid(data) {
				bad.Add(1)
			}
			// Poll often enough to catch a torn write, without starving
			// the writers of the CPU.
			time.Sleep(200 * time.Microsecond)
		}
	}()
	proctest.Run(t, 8, "create", "TOKENS_FILE="+s.Path())
	stop.Store(true)
	wg.Wait()
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 800 {
		t.Errorf("got %d tokens, want 800", len(list))
	}
	seen := map[string]bool{}
	for _, e := range list {
		seen[e.Task] = true
	}
	if len(seen) != 800 {
		t.Errorf("got %d distinct tasks, want 800", len(seen))
	}
	if bad.Load() != 0 {
		t.Errorf("reader saw %d invalid files out of %d reads", bad.Load(), reads.Load())
	}
	t.Logf("reader polled %d times", reads.Load())
}

func BenchmarkCreate(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "gate")
	s := Open(filepath.Join(dir, "tokens.json"), filepath.Join(dir, "tokens.json.lock"), nil)
	for i := 0; i < 100; i++ { // a realistic number of live tasks
		s.Create(names.TaskRef{Project: "p", Task: fmt.Sprint("pre", i)})
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tok, err := s.Create(names.TaskRef{Project: "p", Task: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		s.Revoke(names.TaskRef{Project: "p", Task: "bench"})
		_ = tok
		b.StartTimer()
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"terok-g-0123456789abcdef0123456789abcdef": {"project": "p", "task": "1"}}`))
	f.Add([]byte(`{"a": [], "b": {"project": "x"}}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"t": {"project": "p", "task": "1", "expires": "2026-12-03T16:00:00Z"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, _, err := Parse(data)
		if err != nil && len(entries) > 0 {
			t.Fatal("entries returned with an error")
		}
		for _, e := range entries {
			if e.Raw == nil {
				t.Fatal("entry without raw value")
			}
		}
	})
}

// The binding members: both or none; a bad one makes the entry malformed.
func TestParseBinding(t *testing.T) {
	for _, c := range []struct {
		name, value string
		ok          bool
		container   string
	}{
		{"none", `{"project":"p","task":"t"}`, true, ""},
		{"nulls", `{"project":"p","task":"t","container":null,"bound_at":null}`, true, ""},
		{"bound", `{"project":"p","task":"t","container":"p-t","bound_at":"2026-12-03T12:00:00.123456789Z"}`, true, "p-t"},
		{"no bound_at", `{"project":"p","task":"t","container":"p-t"}`, false, ""},
		{"no container", `{"project":"p","task":"t","bound_at":"2026-12-03T12:00:00Z"}`, false, ""},
		{"bad name", `{"project":"p","task":"t","container":"../x","bound_at":"2026-12-03T12:00:00Z"}`, false, ""},
		{"bad time", `{"project":"p","task":"t","container":"p-t","bound_at":"noon"}`, false, ""},
		{"number", `{"project":"p","task":"t","container":1,"bound_at":"2026-12-03T12:00:00Z"}`, false, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			entries, skipped, err := Parse([]byte(`{"terok-g-0123456789abcdef0123456789abcdef":` + c.value + `}`))
			if err != nil {
				t.Fatal(err)
			}
			if c.ok != (len(entries) == 1 && skipped == 0) {
				t.Fatalf("entries %+v skipped %d, want ok %v", entries, skipped, c.ok)
			}
			if c.ok && entries[0].Container != c.container {
				t.Fatalf("container %q, want %q", entries[0].Container, c.container)
			}
		})
	}
}

func TestCreateBound(t *testing.T) {
	dir := t.TempDir()
	s := Open(filepath.Join(dir, "tokens.json"), filepath.Join(dir, "tokens.json.lock"), nil)
	before := time.Now()
	tok, err := s.CreateBound(names.TaskRef{Project: "p", Task: "t"}, "p-t", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	e, ok := s.Lookup(tok)
	if !ok || e.Container != "p-t" || e.BoundAt.Before(before) || !e.Expires.IsZero() {
		t.Fatalf("lookup %+v %v", e, ok)
	}
	if _, err := s.CreateBound(names.TaskRef{Project: "p", Task: "t"}, "../x", time.Time{}); err == nil {
		t.Fatal("bad container name accepted")
	}
}
