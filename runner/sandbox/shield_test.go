package sandbox

import (
	"context"
	"testing"

	"terok.dev/sandbox/runner/shield"
)

// The facade's shield shorthands are runner/shield's operations on a
// shield.Container: a container without a name is refused before podman is
// asked, and under bypass Up and Down change nothing.
func TestShieldShorthandsTakeAContainer(t *testing.T) {
	cfg, env := coreTestConfig(t)
	ctx := context.Background()
	sb := New(cfg, Options{Env: env, Podman: "/nonexistent/podman"})
	if _, err := sb.ShieldState(ctx, shield.Container{TaskDir: t.TempDir()}); err == nil {
		t.Error("ShieldState without a container name: no error")
	}
	if err := sb.ShieldCleanup(ctx, shield.Container{}); err == nil {
		t.Error("ShieldCleanup without a container name: no error")
	}
	if _, err := sb.ShieldAllow(ctx, shield.Container{}, "198.51.100.7"); err == nil {
		t.Error("ShieldAllow without a container name: no error")
	}
	cfg.ShieldBypass = true
	sb = New(cfg, Options{Env: env, Podman: "/nonexistent/podman"})
	if err := sb.ShieldDown(ctx, shield.Container{Name: "p-t1"}, shield.Down{AllowAll: true}); err != nil {
		t.Errorf("ShieldDown under bypass: %v", err)
	}
	if err := sb.ShieldUp(ctx, shield.Container{Name: "p-t1"}); err != nil {
		t.Errorf("ShieldUp under bypass: %v", err)
	}
	if !sb.ShieldStatus().Bypass {
		t.Error("ShieldStatus under bypass: Bypass false")
	}
}
