package shield

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"terok.dev/sandbox/runner/internal/seccomp"
)

// TestSetupInstallsSeccompProfile: --user and --root (as root) write the
// profile the runner then accepts (docs/seccomp.md).
func TestSetupInstallsSeccompProfile(t *testing.T) {
	if _, err := seccomp.FindPodmanDefault(); err != nil {
		t.Skipf("podman's default seccomp profile is not installed here: %v", err)
	}
	ctx := context.Background()
	binDir := t.TempDir()
	hook := filepath.Join(binDir, "terok-shield-hook")
	fakeBin(t, binDir, "terok-shield-hook", "[ \"$1\" = --bundle-version ] && echo 4\n")
	for _, c := range []struct {
		name       string
		root, user bool
		euid       int
	}{
		{"user", false, true, os.Geteuid()},
		{"root as root", true, false, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.euid == 0 && os.Geteuid() != 0 {
				t.Skip("needs root")
			}
			p, _ := testPaths(t)
			mkdir(t, p.SystemHooksDirs[0])
			dst := seccomp.Path(filepath.Join(t.TempDir(), "config"))
			res, err := Setup(ctx, SetupOptions{Root: c.root, User: c.user, HookBinary: hook, Paths: p, EUID: c.euid, SeccompProfile: dst})
			if err != nil {
				t.Fatal(err)
			}
			if res.SeccompProfile != dst {
				t.Fatalf("SeccompProfile = %q, want %q", res.SeccompProfile, dst)
			}
			if err := seccomp.Load(dst, os.Geteuid()); err != nil {
				t.Fatalf("the installed profile is refused: %v", err)
			}
		})
	}
}

// TestSetupSeccompThroughSudo: --root without root privileges writes
// root's profile through sudo (copy beside, then rename), and a failing
// sudo is an error.
func TestSetupSeccompThroughSudo(t *testing.T) {
	if _, err := seccomp.FindPodmanDefault(); err != nil {
		t.Skipf("podman's default seccomp profile is not installed here: %v", err)
	}
	ctx := context.Background()
	binDir := t.TempDir()
	hook := filepath.Join(binDir, "terok-shield-hook")
	fakeBin(t, binDir, "terok-shield-hook", "[ \"$1\" = --bundle-version ] && echo 4\n")
	p, _ := testPaths(t)
	mkdir(t, p.SystemHooksDirs[0])
	sudoDir := t.TempDir()
	log := filepath.Join(sudoDir, "log")
	fakeBin(t, sudoDir, "sudo", "echo \"$@\" >> "+log+"\nexec \"$@\"\n")
	dst := filepath.Join(t.TempDir(), "etc", "terok", "sandbox", seccomp.FileName)
	res, err := Setup(ctx, SetupOptions{Root: true, HookBinary: hook, Paths: p, EUID: 1000, Tools: Tools{Path: sudoDir + ":/usr/bin:/bin"},
		SeccompProfile: filepath.Join(t.TempDir(), "unused", seccomp.FileName), SeccompRootProfile: dst})
	if err != nil {
		t.Fatal(err)
	}
	if res.SeccompProfile != dst {
		t.Fatalf("SeccompProfile = %q, want %q", res.SeccompProfile, dst)
	}
	if err := seccomp.Load(dst, os.Geteuid()); err != nil {
		t.Fatalf("the profile written through sudo is refused: %v", err)
	}
	calls, _ := os.ReadFile(log)
	if !strings.Contains(string(calls), "mv -f "+dst+".new "+dst) {
		t.Fatalf("sudo calls:\n%s", calls)
	}
	if _, err := os.Stat(dst + ".new"); !os.IsNotExist(err) {
		t.Fatalf("temporary copy left: %v", err)
	}
	fakeBin(t, sudoDir, "sudo", "case \"$*\" in *seccomp*) echo denied >&2; exit 1;; esac\nexec \"$@\"\n")
	if _, err := Setup(ctx, SetupOptions{Root: true, HookBinary: hook, Paths: p, EUID: 1000, Tools: Tools{Path: sudoDir + ":/usr/bin:/bin"},
		SeccompProfile: dst, SeccompRootProfile: dst}); err == nil || !strings.Contains(err.Error(), "denied") {
		t.Fatalf("failing sudo: %v", err)
	}
}
