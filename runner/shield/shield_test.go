package shield

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/common/testkit"
)

// testEnv is a user with a home, config and state of their own.
func testEnv(t *testing.T) config.Env {
	t.Helper()
	dir := t.TempDir()
	vars := testkit.RootVars(dir)
	vars["XDG_CONFIG_HOME"], vars["PATH"] = filepath.Join(dir, "home", ".config"), os.Getenv("PATH")
	return testkit.Env(vars, os.Geteuid(), filepath.Join(dir, "home"))
}

// A user setup writes the hook descriptors naming the hook executable into
// the user's hooks directory and lists that directory in containers.conf.
func TestSetupUser(t *testing.T) {
	env := testEnv(t)
	hook := filepath.Join(t.TempDir(), "terok-shield-hook")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	s := New(config.Defaults(env), Options{Env: env, HookBinary: hook})
	res, err := s.Setup(context.Background(), ScopeUser)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(res.Dir, env.Home) || !res.ConfChanged {
		t.Fatalf("result %+v: want hooks under %s and containers.conf changed", res, env.Home)
	}
	entries, err := os.ReadDir(res.Dir)
	if err != nil || len(entries) == 0 {
		t.Fatalf("hooks directory %s: %v %v", res.Dir, entries, err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(res.Dir, e.Name()))
		if err != nil || !strings.Contains(string(b), hook) {
			t.Fatalf("descriptor %s does not name %s: %s %v", e.Name(), hook, b, err)
		}
	}
	conf, err := os.ReadFile(filepath.Join(env.Getenv("XDG_CONFIG_HOME"), "containers", "containers.conf"))
	if err != nil || !strings.Contains(string(conf), res.Dir) {
		t.Fatalf("containers.conf does not list %s: %s %v", res.Dir, conf, err)
	}
}

func TestSetupRefusesBadInput(t *testing.T) {
	env := testEnv(t)
	for _, tc := range []struct {
		name  string
		hook  string
		scope Scope
		want  string
	}{
		{"no scope", "/bin/true", 0, "unknown setup scope"},
		{"unknown scope", "/bin/true", Scope(9), "unknown setup scope 9"},
		{"missing hook", filepath.Join(t.TempDir(), "nope"), ScopeUser, "nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(config.Defaults(env), Options{Env: env, HookBinary: tc.hook}).Setup(context.Background(), tc.scope)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestLiveOperationsNeedAName(t *testing.T) {
	env := testEnv(t)
	s := New(config.Defaults(env), Options{Env: env, HookBinary: "/bin/true"})
	ctx := context.Background()
	if _, err := s.State(ctx, Container{TaskDir: t.TempDir()}); err == nil {
		t.Fatal("State without a name succeeded")
	}
	if _, err := s.Allow(ctx, Container{}, "198.51.100.1"); err == nil {
		t.Fatal("Allow without a name succeeded")
	}
	if err := s.Up(ctx, Container{}); err == nil {
		t.Fatal("Up without a name succeeded")
	}
}
