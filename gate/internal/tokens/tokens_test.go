package tokens

import (
	"os"
	"path/filepath"
	"terok.dev/sandbox/common/names"
	"testing"
	"time"

	"terok.dev/sandbox/common/gatetokens"
)

func TestValidateHotReload(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "tokens.json")
	admin := "terok-g-ffffffffffffffffffffffffffffffff"
	s := New(file, admin, nil)
	w := gatetokens.Open(file, file+".lock", nil)

	if _, _, ok := s.Validate("terok-g-00000000000000000000000000000000"); ok {
		t.Fatal("token accepted with no file")
	}
	if p, _, ok := s.Validate(admin); !ok || p != Wildcard {
		t.Fatalf("admin = %q %v", p, ok)
	}
	tok, err := w.Create(names.TaskRef{Project: "proj", Task: "1"})
	if err != nil {
		t.Fatal(err)
	}
	if p, task, ok := s.Validate(tok); !ok || p != "proj" || task != "1" {
		t.Fatalf("created token: %q %q %v", p, task, ok)
	}
	tok2, err := w.Create(names.TaskRef{Project: "other", Task: "2"})
	if err != nil {
		t.Fatal(err)
	}
	if p, _, ok := s.Validate(tok2); !ok || p != "other" {
		t.Fatalf("second token: %q %v", p, ok)
	}
	if _, err := w.Revoke(names.TaskRef{Project: "proj", Task: "1"}); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := s.Validate(tok); ok {
		t.Fatal("revoked token still accepted")
	}
	// A corrupt file refuses every task token, never the admin token.
	if err := os.WriteFile(file, []byte(`{"`+tok2+`": {"project": "other", "task": "2"`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := s.Validate(tok2); ok {
		t.Fatal("token accepted from a corrupt file")
	}
	if _, _, ok := s.Validate(admin); !ok {
		t.Fatal("admin refused with a corrupt file")
	}
	// Tolerant reading: bad entries dropped, good ones kept; in-place rewrite
	// of the same size is still seen through the modification time.
	body := `{"` + tok2 + `": {"project": "other", "task": "2"}, "x": 1, "y": {"project": 3, "task": "1"}}`
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if p, _, ok := s.Validate(tok2); !ok || p != "other" {
		t.Fatalf("after repair: %q %v", p, ok)
	}
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := s.Validate(tok2); ok {
		t.Fatal("token accepted after the file was removed")
	}
	if _, _, ok := s.Validate(""); ok {
		t.Fatal("empty token accepted")
	}
}

func TestNoAdmin(t *testing.T) {
	s := New(filepath.Join(t.TempDir(), "none.json"), "", nil)
	if _, _, ok := s.Validate(""); ok {
		t.Fatal("empty token matched an unset admin token")
	}
}

func TestLookupRevoked(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "tokens.json")
	s := New(file, "", nil)
	w := gatetokens.Open(file, file+".lock", nil)
	tok, err := w.Create(names.TaskRef{Project: "proj", Task: "7"})
	if err != nil {
		t.Fatal(err)
	}
	if r := s.Lookup(tok); !r.OK || r.Revoked || r.Project != "proj" || r.Task != "7" {
		t.Fatalf("live token: %+v", r)
	}
	if _, err := w.Revoke(names.TaskRef{Project: "proj", Task: "7"}); err != nil {
		t.Fatal(err)
	}
	if r := s.Lookup(tok); r.OK || !r.Revoked || r.Project != "proj" || r.Task != "7" {
		t.Fatalf("revoked token: %+v", r)
	}
	if r := s.Lookup("terok-g-00000000000000000000000000000000"); r.OK || r.Revoked || r.Project != "" {
		t.Fatalf("unknown token: %+v", r)
	}
	// A corrupt file refuses everything but revokes nothing.
	tok2, err := w.Create(names.TaskRef{Project: "proj", Task: "8"})
	if err != nil {
		t.Fatal(err)
	}
	s.Lookup(tok2)
	if err := os.WriteFile(file, []byte("{corrupt"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := s.Lookup(tok2); r.OK || r.Revoked {
		t.Fatalf("token under a corrupt file: %+v", r)
	}
}

// TestLookupExpired: a token whose expiry has passed is not OK, Expired,
// with its project and task; one before its expiry is OK.
func TestLookupExpired(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "tokens.json")
	s := New(file, "", nil)
	w := gatetokens.Open(file, file+".lock", nil)
	for _, tc := range []struct {
		name    string
		expires time.Time
		ok      bool
	}{
		{"passed", time.Now().Add(-time.Second), false},
		{"future", time.Now().Add(time.Hour), true},
		{"none", time.Time{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := w.CreateExpiring(names.TaskRef{Project: "proj", Task: tc.name}, tc.expires)
			if err != nil {
				t.Fatal(err)
			}
			r := s.Lookup(tok)
			if r.OK != tc.ok || r.Expired == tc.ok || r.Revoked || r.Project != "proj" || r.Task != tc.name {
				t.Fatalf("lookup: %+v", r)
			}
		})
	}
}
