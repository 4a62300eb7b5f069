package testkit

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestFreePortIsBindable(t *testing.T) {
	for i := 0; i < 3; i++ {
		p := FreePort(t)
		if p <= 0 || p > 65535 {
			t.Fatalf("port %d out of range", p)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			t.Fatalf("FreePort gave %d, which cannot be bound: %v", p, err)
		}
		ln.Close()
	}
}

func TestFreePortsDistinct(t *testing.T) {
	for i := 0; i < 20; i++ {
		ps := FreePorts(t, 3)
		if len(ps) != 3 || ps[0] == ps[1] || ps[0] == ps[2] || ps[1] == ps[2] {
			t.Fatalf("FreePorts(3) = %v, want three distinct ports", ps)
		}
		for _, p := range ps {
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				t.Fatalf("FreePorts gave %d, which cannot be bound: %v", p, err)
			}
			ln.Close()
		}
	}
}

func TestRootVarsAndEnv(t *testing.T) {
	dir := t.TempDir()
	vars := RootVars(dir)
	vars["HOME"] = dir
	env := Env(vars, 1000, dir)
	tests := []struct {
		name, got, want string
	}{
		{"state", env.StateRoot(), filepath.Join(dir, "state")},
		{"runtime", env.RuntimeRoot(), filepath.Join(dir, "run")},
		{"config", env.ConfigRoot(), filepath.Join(dir, "cfg")},
		{"credentials", env.CredentialsRoot(), filepath.Join(dir, "cred")},
		{"umbrella", env.UmbrellaConfigRoot(), filepath.Join(dir, "umbrella")},
		{"no leak from the process", env.Getenv("PATH"), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
}

func TestEnvironSorted(t *testing.T) {
	got := Environ(map[string]string{"B": "2", "A": "1=x", "C": ""})
	if want := "A=1=x B=2 C="; strings.Join(got, " ") != want {
		t.Fatalf("Environ = %q, want %q", got, want)
	}
}

// failRecorder records a Fatal instead of stopping the test.
type failRecorder struct {
	testing.TB
	failed bool
}

func (f *failRecorder) Helper()                           {}
func (f *failRecorder) Fatal(args ...any)                 { f.failed = true }
func (f *failRecorder) Fatalf(format string, args ...any) { f.failed = true }

func TestDocExamples(t *testing.T) {
	doc := "# T\n\n```json\n{\"not\":1}\n```\n\n```jsonl\n{\"a\":1}\n\n  \n{\"b\":2}\n```\ntext {\"c\":3}\n```jsonl\n{\"d\":4}\n```\n"
	p := filepath.Join(t.TempDir(), "doc.md")
	if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		path    string
		atLeast int
		want    []string
		fails   bool
	}{
		{"all jsonl lines in order", p, 3, []string{`{"a":1}`, `{"b":2}`, `{"d":4}`}, false},
		{"fewer than asked", p, 4, []string{`{"a":1}`, `{"b":2}`, `{"d":4}`}, true},
		{"missing file", filepath.Join(t.TempDir(), "none.md"), 0, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &failRecorder{TB: t}
			got := DocExamples(rec, tt.path, tt.atLeast)
			if rec.failed != tt.fails {
				t.Fatalf("failed = %v, want %v", rec.failed, tt.fails)
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestBufferConcurrentWrites(t *testing.T) {
	var b Buffer
	done := make(chan struct{})
	for i := 0; i < 4; i++ {
		go func() {
			defer func() { done <- struct{}{} }()
			for j := 0; j < 100; j++ {
				b.Write([]byte("ab"))
				_ = b.String()
			}
		}()
	}
	for i := 0; i < 4; i++ {
		<-done
	}
	if got := b.String(); got != strings.Repeat("ab", 400) {
		t.Errorf("%d bytes, want 800 of ab", len(got))
	}
}
