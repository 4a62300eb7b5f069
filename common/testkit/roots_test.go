package testkit

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// keepRootVars restores the process's root variables after a test that
// lets runGuarded set them.
func keepRootVars(t *testing.T) {
	for _, n := range rootNames() {
		t.Setenv(n, os.Getenv(n))
	}
}

func TestRunIsolatesAndCatchesAStray(t *testing.T) {
	keepRootVars(t)
	home := t.TempDir()
	defaults := Env(map[string]string{}, 1000, home)
	state := defaults.StateRoot() // home/.local/share/terok/sandbox, absent
	var inRun string
	var stderr bytes.Buffer
	code := runGuarded(func() int {
		inRun = os.Getenv("TEROK_SANDBOX_STATE_DIR")
		// What a child without the root variables does.
		if err := os.MkdirAll(filepath.Join(state, "audit"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(state, "audit", "ssh.jsonl"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		return 0
	}, &stderr, defaults)
	if code != 1 {
		t.Errorf("code %d with a stray, want 1", code)
	}
	if inRun == "" || strings.HasPrefix(inRun, home) {
		t.Errorf("state dir during the run %q, want a fresh directory", inRun)
	}
	if _, err := os.Stat(inRun); err == nil {
		t.Errorf("test roots %s left behind", inRun)
	}
	msg := stderr.String()
	if !strings.Contains(msg, filepath.Join(state, "audit", "ssh.jsonl")) || !strings.Contains(msg, "removed "+filepath.Join(home, ".local")) {
		t.Errorf("message %q names neither the stray nor what was removed", msg)
	}
	if _, err := os.Stat(filepath.Join(home, ".local")); err == nil {
		t.Error("the new default root was not removed")
	}
}

func TestRunKeepsAFailureAndAnExistingRoot(t *testing.T) {
	keepRootVars(t)
	home := t.TempDir()
	defaults := Env(map[string]string{}, 1000, home)
	cfg := defaults.UmbrellaConfigRoot()
	if err := os.MkdirAll(cfg, 0o700); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	if code := runGuarded(func() int { return 3 }, &stderr, defaults); code != 3 || stderr.Len() != 0 {
		t.Errorf("clean failing run: code %d, %q", code, stderr.String())
	}
	code := runGuarded(func() int {
		if err := os.WriteFile(filepath.Join(cfg, "config.toml"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		return 0
	}, &stderr, defaults)
	if code != 1 || !strings.Contains(stderr.String(), filepath.Join(cfg, "config.toml")) {
		t.Errorf("stray in an existing root: code %d, %q", code, stderr.String())
	}
	if _, err := os.Stat(filepath.Join(cfg, "config.toml")); err != nil {
		t.Error("removed a file from a root that existed before the run")
	}
}

func TestActivateEnv(t *testing.T) {
	for k, v := range RootVars("/r") {
		t.Setenv(k, v)
	}
	t.Setenv("TEROK_CONFIG_DIR", "")
	got := strings.Join(ActivateEnv(), " ")
	want := "-E TEROK_CREDENTIALS_DIR=/r/cred -E TEROK_SANDBOX_CONFIG_DIR=/r/cfg -E TEROK_SANDBOX_RUNTIME_DIR=/r/run -E TEROK_SANDBOX_STATE_DIR=/r/state"
	if got != want {
		t.Errorf("ActivateEnv = %q, want %q", got, want)
	}
}
