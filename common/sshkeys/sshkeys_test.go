package sshkeys

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"terok.dev/sandbox/common/internal/proctest"
)

func TestMain(m *testing.M) {
	proctest.Main(m, proctest.Workers{
		"update": func() error {
			path := os.Getenv("KEYS_FILE")
			w := os.Getenv("WORKER_INDEX")
			for i := 0; i < 100; i++ {
				proj := fmt.Sprintf("p%d", i%4)
				if err := Update(path, Pair{Project: proj, PrivateKey: fmt.Sprintf("/k/w%s-%d", w, i), PublicKey: fmt.Sprintf("/k/w%s-%d.pub", w, i)}); err != nil {
					return err
				}
			}
			return nil
		},
	})
}

const specExample = `{
  "proj-a": [
    {"private_key": "/keys/a1", "public_key": "/keys/a1.pub"},
    {"private_key": "/keys/a2", "public_key": "/keys/a2.pub"}
  ],
  "legacy-proj": {"private_key": "/keys/id", "public_key": "/keys/id.pub"}
}`

func TestParseRules(t *testing.T) {
	tests := []struct {
		name string
		data string
		want map[string]int
		err  bool
	}{
		{"spec example", specExample, map[string]int{"proj-a": 2, "legacy-proj": 1}, false},
		{"empty", "  \n", map[string]int{}, false},
		{"invalid", `{"a":`, map[string]int{}, true},
		{"top-level list", `[]`, map[string]int{}, true},
		{"project value string", `{"a": "x", "b": {"private_key": "/p", "public_key": "/p.pub"}}`, map[string]int{"b": 1}, false},
		{"elements lacking strings", `{"a": [{"private_key": "/p"}, {"private_key": 1, "public_key": "/x"}, 3, {"private_key": "/q", "public_key": "/q.pub"}]}`, map[string]int{"a": 1}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Parse([]byte(tc.data))
			if (err != nil) != tc.err {
				t.Fatalf("err = %v", err)
			}
			if len(m) != len(tc.want) {
				t.Fatalf("got %v", m)
			}
			for k, n := range tc.want {
				if len(m[k]) != n {
					t.Errorf("%s: %d entries, want %d", k, len(m[k]), n)
				}
			}
		})
	}
	m, _ := Parse([]byte(specExample))
	if m["proj-a"][1].PrivateKey != "/keys/a2" || m["legacy-proj"][0].PublicKey != "/keys/id.pub" {
		t.Errorf("order or content wrong: %+v", m)
	}
}

func TestUpdateRules(t *testing.T) {
	path := filepath.Join(t.TempDir(), "creds", "ssh-keys.json")
	os.MkdirAll(filepath.Dir(path), 0o700)
	os.WriteFile(path, []byte(specExample), 0o600)

	// A single-object entry is converted to a list and kept.
	if err := Update(path, Pair{Project: "legacy-proj", PrivateKey: "/keys/new", PublicKey: "/keys/new.pub"}); err != nil {
		t.Fatal(err)
	}
	// Same private key: replaced in place (public key path may change).
	if err := Update(path, Pair{Project: "proj-a", PrivateKey: "/keys/a1", PublicKey: "/keys/a1-renamed.pub"}); err != nil {
		t.Fatal(err)
	}
	// New project appended.
	if err := Update(path, Pair{Project: "fresh", PrivateKey: "/keys/f", PublicKey: "/keys/f.pub"}); err != nil {
		t.Fatal(err)
	}
	m, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := m["legacy-proj"]; len(got) != 2 || got[0].PrivateKey != "/keys/id" || got[1].PrivateKey != "/keys/new" {
		t.Errorf("legacy-proj = %+v", got)
	}
	if got := m["proj-a"]; len(got) != 2 || got[0].PublicKey != "/keys/a1-renamed.pub" || got[1].PrivateKey != "/keys/a2" {
		t.Errorf("proj-a = %+v", got)
	}
	if len(m["fresh"]) != 1 {
		t.Errorf("fresh = %+v", m["fresh"])
	}
	data, _ := os.ReadFile(path)
	var raw map[string]json.RawMessage
	json.Unmarshal(data, &raw)
	if !strings.HasPrefix(strings.TrimSpace(string(raw["legacy-proj"])), "[") {
		t.Errorf("project value not written as a list: %s", raw["legacy-proj"])
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode().Perm())
	}
}

func TestUpdateKeepsOtherProjectsUntouched(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ssh-keys.json")
	os.WriteFile(path, []byte(`{"other": {"private_key": "/o", "public_key": "/o.pub", "comment": "x"}, "weird": 42}`), 0o600)
	if err := Update(path, Pair{Project: "mine", PrivateKey: "/m", PublicKey: "/m.pub"}); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	var raw map[string]any
	json.Unmarshal(data, &raw)
	if o, ok := raw["other"].(map[string]any); !ok || o["comment"] != "x" {
		t.Errorf("other project changed: %s", data)
	}
	if raw["weird"] != float64(42) {
		t.Errorf("unknown value dropped: %s", data)
	}
}

func TestUpdateRefusesInvalidFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ssh-keys.json")
	bad := []byte(`{"a": [`)
	os.WriteFile(path, bad, 0o600)
	err := Update(path, Pair{Project: "p", PrivateKey: "/k", PublicKey: "/k.pub"})
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Update = %v", err)
	}
	if data, _ := os.ReadFile(path); string(data) != string(bad) {
		t.Errorf("invalid file modified: %q", data)
	}
	if err := Update(path, Pair{Project: "p", PrivateKey: "relative", PublicKey: "/k.pub"}); err == nil {
		t.Error("relative key path accepted")
	}
}

func TestUpdateRefusesInvalidProject(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ssh-keys.json")
	for _, p := range []string{"", "../x", "a/b", "-p", ".", "p q"} {
		if err := Update(path, Pair{Project: p, PrivateKey: "/k", PublicKey: "/k.pub"}); err == nil || !strings.Contains(err.Error(), "invalid project id") {
			t.Errorf("Update(%q) = %v", p, err)
		}
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Error("a rejected project touched ssh-keys.json")
	}
}

func TestReadMissingAndEmpty(t *testing.T) {
	dir := t.TempDir()
	if m, err := Read(filepath.Join(dir, "none.json")); err != nil || len(m) != 0 {
		t.Errorf("missing: %v %v", m, err)
	}
	p := filepath.Join(dir, "empty.json")
	os.WriteFile(p, nil, 0o600)
	if err := Update(p, Pair{Project: "p", PrivateKey: "/k", PublicKey: "/k.pub"}); err != nil {
		t.Fatalf("empty file must count as {}: %v", err)
	}
}

// 8 processes x 100 updates at once: every key pair lands and a reader
// polling meanwhile never sees invalid JSON.
func TestConcurrentProcessesLoseNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ssh-keys.json")
	var stop atomic.Bool
	var reads, bad atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			data, err := os.ReadFile(path)
			if err != nil || len(data) == 0 {
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
	proctest.Run(t, 8, "update", "KEYS_FILE="+path)
	stop.Store(true)
	wg.Wait()
	m, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, es := range m {
		total += len(es)
	}
	if total != 800 {
		t.Errorf("got %d entries, want 800", total)
	}
	if bad.Load() != 0 {
		t.Errorf("reader saw %d invalid files of %d", bad.Load(), reads.Load())
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(specExample))
	f.Add([]byte(`{"a": [{}], "b": null}`))
	f.Add([]byte(`{"a": [{"private_key": "/a", "public_key": "/a.pub", "destinations": ["*.example.org", "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s"]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, _ := Parse(data)
		for _, es := range m {
			if len(es) == 0 {
				t.Fatal("project with no entries kept")
			}
			for _, e := range es {
				// A destinations member is either usable or flagged, never dropped.
				if e.Destinations != nil && (e.Problem != "" || ValidateDestinations(e.Destinations) != nil) {
					t.Fatalf("unusable destinations passed: %+v", e)
				}
			}
		}
	})
}

func TestValidateDestination(t *testing.T) {
	for _, c := range []struct {
		in string
		ok bool
	}{
		{"github.com", true},
		{"*.example.org", true},
		{"host-?.example.org", true},
		{"127.0.0.1", true},
		{"2001:db8::1", true},
		{"SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s", true},
		{"SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2", false},   // 42 characters
		{"SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s=", false}, // padded
		{"SHA256:", false},
		{"", false},
		{"-oProxyCommand=x", false},
		{".example.org", false},
		{"a..b", false},
		{"exa mple.org", false},
		{"[host]:22", false},
		{"host,other", false},
		{"!host", false},
		{"héllo.org", false},
		{strings.Repeat("a", 254), false},
	} {
		if err := ValidateDestination(c.in); (err == nil) != c.ok {
			t.Errorf("ValidateDestination(%q) = %v, want ok=%v", c.in, err, c.ok)
		} else if err != nil && !strings.Contains(err.Error(), "e.g.") {
			t.Errorf("error without an example: %v", err)
		}
	}
	if ValidateDestinations(nil) == nil || ValidateDestinations(make([]string, MaxDestinations+1)) == nil {
		t.Error("empty or oversized list accepted")
	}
}

func TestParseDestinations(t *testing.T) {
	m, err := Parse([]byte(`{"p": [
	  {"private_key": "/a", "public_key": "/a.pub", "destinations": ["github.com", "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s"]},
	  {"private_key": "/b", "public_key": "/b.pub"},
	  {"private_key": "/c", "public_key": "/c.pub", "destinations": "github.com"},
	  {"private_key": "/d", "public_key": "/d.pub", "destinations": []},
	  {"private_key": "/e", "public_key": "/e.pub", "destinations": ["bad host"]},
	  {"private_key": "/f", "public_key": "/f.pub", "destinations": null}
	]}`))
	if err != nil {
		t.Fatal(err)
	}
	es := m["p"]
	if len(es) != 6 {
		t.Fatalf("entries %+v", es)
	}
	if !es[0].Restricted() || es[0].Problem != "" || len(es[0].Destinations) != 2 {
		t.Errorf("valid destinations: %+v", es[0])
	}
	if es[1].Restricted() {
		t.Errorf("no member, but restricted: %+v", es[1])
	}
	for _, e := range es[2:] {
		if e.Problem == "" || !e.Restricted() || e.Destinations != nil {
			t.Errorf("unusable destinations not flagged: %+v", e)
		}
	}
	if err := Check(m); err == nil || !strings.Contains(err.Error(), "/e") || strings.Contains(err.Error(), "key /a") {
		t.Errorf("Check = %v", err)
	}
}

func TestRegisterAndSetDestinations(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ssh-keys.json")
	if err := os.WriteFile(path, []byte(`{"p": [{"private_key": "/a", "public_key": "/a.pub", "destinations": ["github.com"], "future": 7}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	// Re-registering keeps destinations and unknown members.
	if err := Update(path, Pair{Project: "p", PrivateKey: "/a", PublicKey: "/a2.pub"}); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	var raw map[string][]map[string]any
	if err := json.Unmarshal(data, &raw); err != nil || raw["p"][0]["future"] != 7.0 ||
		fmt.Sprint(raw["p"][0]["destinations"]) != "[github.com]" {
		t.Fatalf("Update dropped members: %s", data)
	}
	if err := Register(path, Pair{Project: "p", PrivateKey: "/b", PublicKey: "/b.pub"}, []string{"*.example.org"}); err != nil {
		t.Fatal(err)
	}
	if err := Register(path, Pair{Project: "p", PrivateKey: "/c", PublicKey: "/c.pub"}, []string{"bad host"}); err == nil {
		t.Fatal("invalid destination registered")
	}
	if err := SetDestinations(path, KeyRef{Project: "p", PrivateKey: "/a"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := SetDestinations(path, KeyRef{Project: "p", PrivateKey: "/b"}, []string{"SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s"}); err != nil {
		t.Fatal(err)
	}
	if err := SetDestinations(path, KeyRef{Project: "p", PrivateKey: "/zzz"}, []string{"github.com"}); !errors.Is(err, ErrNoEntry) {
		t.Fatalf("unknown key: %v", err)
	}
	m, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	es := m["p"]
	if len(es) != 2 || es[0].Restricted() || es[0].PublicKey != "/a2.pub" ||
		len(es[1].Destinations) != 1 || !strings.HasPrefix(es[1].Destinations[0], "SHA256:") {
		t.Fatalf("entries %+v", es)
	}
}

// TestCheckIsStable: several projects with unusable destinations are named
// in project order every time (the map's order is random).
func TestCheckIsStable(t *testing.T) {
	bad := func(p string) []Entry {
		return []Entry{{PrivateKey: "/" + p, Destinations: nil, Problem: "bad"}}
	}
	m := Map{"c": bad("c"), "a": bad("a"), "d": bad("d"), "b": bad("b"), "e": bad("e")}
	want := "project a key /a: bad\nproject b key /b: bad\nproject c key /c: bad\nproject d key /d: bad\nproject e key /e: bad"
	for i := 0; i < 50; i++ {
		if err := Check(m); err == nil || err.Error() != want {
			t.Fatalf("run %d: Check = %v, want\n%s", i, err, want)
		}
	}
}
