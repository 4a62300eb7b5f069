package shieldbundle

import (
	"os"
	"path/filepath"
	"testing"
)

func TestParseAndReadMode(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"", ModeEnforce, true}, {"enforce", ModeEnforce, true}, {"learn", ModeLearn, true},
		{"interactive", ModeInteractive, true}, {"Learn", "", false}, {"off", "", false},
	}
	for _, tt := range tests {
		got, err := ParseMode(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseMode(%q) = %q, %v", tt.in, got, err)
		}
	}
	dir := t.TempDir()
	if m, err := ReadMode(dir); err != nil || m != ModeEnforce {
		t.Fatalf("missing file: %q %v (an older bundle is enforce)", m, err)
	}
	if err := os.WriteFile(filepath.Join(dir, FileMode), []byte("learn\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if m, err := ReadMode(dir); err != nil || m != ModeLearn {
		t.Fatalf("learn: %q %v", m, err)
	}
	if err := os.WriteFile(filepath.Join(dir, FileMode), []byte("open\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadMode(dir); err == nil {
		t.Fatal("unknown mode accepted")
	}
}
