package rundebug

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestLogFormatAndAppend(t *testing.T) {
	p := filepath.Join(t.TempDir(), "deep", "terok-sandbox.log")
	l := New(p)
	l.now = func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.Local) }
	l.Debug("removing %s", "c1")
	l.Warning("podman failed:\nforged line")
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	want := "[2026-01-02 03:04:05] DEBUG: removing c1\n[2026-01-02 03:04:05] WARNING: podman failed:\\nforged line\n"
	if string(data) != want {
		t.Fatalf("log:\n%q\nwant\n%q", data, want)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
}

func TestLogFailuresAreIgnored(t *testing.T) {
	var nilLog *Log
	nilLog.Debug("x")
	New("").Debug("x")
	// A path below a regular file cannot be created; nothing must panic.
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	New(filepath.Join(f, "sub", "log")).Warning("x")
}
