package shield

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// fakeBin writes an executable shell script name into dir.
func fakeBin(t *testing.T, dir, name, script string) {
	t.Helper()
	if err := writeScript(filepath.Join(dir, name), script); err != nil {
		t.Fatal(err)
	}
}

func writeScript(path, script string) error {
	return os.WriteFile(path, []byte("#!/bin/sh\n"+script), 0o755)
}

func testLog() (*slog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	return slog.New(slog.NewTextHandler(&buf, nil)), &buf
}

func TestWriteProfileLists(t *testing.T) {
	dir := t.TempDir()
	writeText(t, filepath.Join(dir, cacheKeyFile), "stale\n")
	entries := []string{"Example.COM", "198.51.100.0/24", "*.wild.example.org", "::ffff:203.0.113.9", "example.com", "198.51.100.0/24", "10.9.0.0/16"}
	if err := writeProfileLists(dir, entries); err != nil {
		t.Fatal(err)
	}
	if got := readState(t, dir, "profile.allowed"); got != "198.51.100.0/24\n203.0.113.9\n10.9.0.0/16\n" {
		t.Errorf("profile.allowed = %q", got)
	}
	if got := readState(t, dir, "profile.domains"); got != "example.com\n*.wild.example.org\n" {
		t.Errorf("profile.domains = %q", got)
	}
	if _, err := os.Stat(filepath.Join(dir, cacheKeyFile)); err == nil {
		t.Error("stale cache key kept")
	}
	if err := writeProfileLists(dir, nil); err != nil {
		t.Fatal(err)
	}
	if readState(t, dir, "profile.allowed") != "" || readState(t, dir, "profile.domains") != "" {
		t.Error("empty entries left old lists")
	}
	if err := writeProfileLists(dir, []string{"not a domain"}); err == nil {
		t.Error("invalid entry accepted")
	}
}

func TestNetworkModeAndHostLoopback(t *testing.T) {
	tests := []struct {
		name, file, dns, mode, hostLo string
	}{
		{"recorded slirp with a pasta-like forwarder", "slirp4netns\n", "169.254.1.1", "slirp4netns", ""},
		{"recorded pasta with a custom forwarder", "pasta\n", "198.51.100.53", "pasta", "169.254.1.2"},
		{"old bundle, slirp forwarder", "", "10.0.2.3", "slirp4netns", ""},
		{"old bundle, pasta forwarder", "", "169.254.1.1", "pasta", "169.254.1.2"},
		{"garbage file falls back", "bridge\n", "10.0.2.3", "slirp4netns", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.file != "" {
				writeText(t, filepath.Join(dir, fileNetworkMode), tt.file)
			}
			mode := networkModeOf(dir, tt.dns)
			if mode != tt.mode || hostLoopbackFor(mode) != tt.hostLo {
				t.Fatalf("mode %q host loopback %q, want %q %q", mode, hostLoopbackFor(mode), tt.mode, tt.hostLo)
			}
		})
	}
}
