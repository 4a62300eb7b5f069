package sandbox

import (
	"context"
	"os"
	"strings"
	"testing"

	"terok.dev/sandbox/runner/internal/seccomp"
)

// TestRunRefusesWithoutSeccompProfile: a missing, unsafe or invalid profile
// stops the launch before podman or the firewall run, bypass or not, and
// the error names the fix.
func TestRunRefusesWithoutSeccompProfile(t *testing.T) {
	cases := []struct {
		name   string
		damage func(t *testing.T, path string)
		want   string
	}{
		{"missing", func(t *testing.T, p string) { seccompMust(t, os.Remove(p)) }, "not installed"},
		{"podman's own", func(t *testing.T, p string) {
			seccompMust(t, os.WriteFile(p, []byte(`{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["socket"],"action":"SCMP_ACT_ALLOW"}]}`), 0o644))
		}, "AF_VSOCK"},
		{"world writable", func(t *testing.T, p string) { seccompMust(t, os.Chmod(p, 0o666)) }, "writable by group or others"},
	}
	for _, c := range cases {
		for _, euid := range []int{0, 1000} {
			t.Run(c.name, func(t *testing.T) {
				s, out, runLog := coreBypassSandbox(t, euid, "echo id")
				c.damage(t, seccomp.Path(s.Config().ConfigDir))
				_, err := s.Run(context.Background(), RunSpec{ContainerName: "c", Image: "i", TaskDir: t.TempDir()}, LifecycleHooks{})
				if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "refused") {
					t.Fatalf("Run: %v; want a refusal naming %q", err, c.want)
				}
				if c.name != "world writable" && !strings.Contains(err.Error(), "shield setup") {
					t.Fatalf("error names no fix: %v", err)
				}
				if _, err := os.Stat(runLog); err == nil {
					t.Fatal("podman ran")
				}
				if strings.Contains(out.String(), "$ podman") {
					t.Fatalf("a command was printed: %q", out.String())
				}
			})
		}
	}
}

func seccompMust(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
