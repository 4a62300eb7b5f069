package shieldbundle

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDecideTimeout(t *testing.T) {
	dir := t.TempDir()
	if d, err := ReadDecideTimeout(dir); err != nil || d != DefaultDecideTimeout {
		t.Fatalf("missing file: %v, %v", d, err)
	}
	for v, want := range map[string]time.Duration{"2s": 2 * time.Second, "10m": 10 * time.Minute, "100ms": 100 * time.Millisecond} {
		if err := os.WriteFile(filepath.Join(dir, FileDecideTimeout), []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if got, err := ReadDecideTimeout(dir); err != nil || got != want {
			t.Errorf("%q: %v, %v; want %v", v, got, err, want)
		}
	}
	for _, v := range []string{"x", "0", "-1s", "50ms", "11m"} {
		if _, err := ParseDecideTimeout(v); err == nil {
			t.Errorf("%q accepted", v)
		}
	}
}

func TestParseDecision(t *testing.T) {
	tests := []struct {
		line string
		want Decision
		err  string
	}{
		{line: `{"id":1,"verdict":"once"}` + "\n", want: Decision{ID: 1, Verdict: VerdictOnce}},
		{line: `{"id":18446744073709551615,"verdict":"always"}`, want: Decision{ID: 1<<64 - 1, Verdict: VerdictAlways}},
		{line: `{"verdict":"refuse","id":7}`, want: Decision{ID: 7, Verdict: VerdictRefuse}},
		{line: `{"id":0,"verdict":"once"}`, err: "id missing"},
		{line: `{"verdict":"once"}`, err: "id missing"},
		{line: `{"id":1,"verdict":"yes"}`, err: "unknown verdict"},
		{line: `{"id":1,"verdict":"once","extra":1}`, err: "unknown field"},
		{line: `{"id":1,"verdict":"once"}{"id":2,"verdict":"once"}`, err: "data after"},
		{line: `{"id":1,"verdict":"once"}` + "\n" + `{"id":2,"verdict":"once"}`, err: "not one line"},
		{line: `{"id":-1,"verdict":"once"}`, err: "decision"},
		{line: `[]`, err: "decision"},
		{line: ``, err: "decision"},
		{line: `{"id":1,"verdict":"` + strings.Repeat("a", MaxDeciderLine) + `"}`, err: "over"},
	}
	for _, tc := range tests {
		got, err := ParseDecision([]byte(tc.line))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err = %v, want %q", tc.line, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: got %+v, %v; want %+v", tc.line, got, err, tc.want)
		}
	}
}

func TestHeldRoundTrip(t *testing.T) {
	h := Held{ID: 3, Proto: "tcp", Dst: "2001:db8::20", Port: 443, Name: "example.test", TimeoutMS: 30000}
	line, err := MarshalLine(h)
	if err != nil {
		t.Fatal(err)
	}
	if line[len(line)-1] != '\n' || strings.Count(string(line), "\n") != 1 {
		t.Fatalf("not one line: %q", line)
	}
	got, err := ParseHeld(line)
	if err != nil || got != h {
		t.Fatalf("got %+v, %v; want %+v", got, err, h)
	}
	for _, bad := range []string{
		`{"id":3,"proto":"tcp","dst":"fe80::1%eth0","timeout_ms":1}`,
		`{"id":3,"proto":"tcp","dst":"example.test","timeout_ms":1}`,
		`{"id":3,"proto":"tcp","dst":"198.51.100.1"}`,
		`{"id":0,"proto":"tcp","dst":"198.51.100.1","timeout_ms":1}`,
	} {
		if _, err := ParseHeld([]byte(bad)); err == nil {
			t.Errorf("%s parsed", bad)
		}
	}
	e, _ := MarshalLine(DeciderError{Error: "another decider is attached"})
	if _, err := ParseHeld(e); err == nil || !strings.Contains(err.Error(), "another decider") {
		t.Fatalf("error line: %v", err)
	}
	if _, err := MarshalLine(Held{ID: 1, Name: strings.Repeat("n", MaxDeciderLine)}); err == nil {
		t.Fatal("over-long line marshalled")
	}
}

// FuzzDeciderLines: neither parser panics; what parses renders back to a
// line that parses to the same value.
func FuzzDeciderLines(f *testing.F) {
	f.Add([]byte(`{"id":1,"verdict":"once"}`))
	f.Add([]byte(`{"id":3,"proto":"tcp","dst":"198.51.100.20","port":443,"name":"a.test","timeout_ms":30000}`))
	f.Add([]byte(`{"error":"busy"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if d, err := ParseDecision(b); err == nil {
			line, err := MarshalLine(d)
			if err != nil {
				t.Fatal(err)
			}
			if d2, err := ParseDecision(line); err != nil || d2 != d {
				t.Fatalf("%+v renders to %q: %+v, %v", d, line, d2, err)
			}
		}
		if h, err := ParseHeld(b); err == nil {
			line, err := MarshalLine(h)
			if err != nil {
				return // re-escaping may lengthen it past the limit
			}
			if h2, err := ParseHeld(line); err != nil || h2 != h {
				t.Fatalf("%+v renders to %q: %+v, %v", h, line, h2, err)
			}
		}
	})
}
