package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"terok.dev/sandbox/common/testkit"
)

func runSetupCLI(t *testing.T, euid int, home string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	vars := map[string]string{"XDG_RUNTIME_DIR": filepath.Join(home, "run")}
	env := testkit.Env(vars, euid, home)
	code := Run(append([]string{Program}, args...), Deps{Stdout: &out, Stderr: &errb, Env: env})
	return code, out.String(), errb.String()
}

func TestSetupUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		euid int
		args []string
		want string
	}{
		{1000, []string{"setup", "--user", "--system"}, "mutually exclusive"},
		{1000, []string{"setup", "--system"}, "needs root"},
		{0, []string{"setup", "--user"}, "use --system"},
		{1000, []string{"setup", "extra"}, "takes no arguments"},
		{1000, []string{"setup", "--frob"}, "flag provided but not defined"},
		{1000, []string{"uninstall", "--user", "--system"}, "mutually exclusive"},
		{1000, []string{"uninstall", "x"}, "takes no arguments"},
	} {
		code, _, errOut := runSetupCLI(t, tc.euid, t.TempDir(), tc.args...)
		if code != ExitUsage || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v as %d: code %d, stderr %q (want 2 and %q)", tc.args, tc.euid, code, errOut, tc.want)
		}
	}
}

// A dry run prints the plan and leaves the home untouched.
func TestSetupDryRunWritesNothing(t *testing.T) {
	home := t.TempDir()
	_, out, errOut := runSetupCLI(t, 1000, home, "setup", "--dry-run")
	if !strings.Contains(out, "directories: would create "+filepath.Join(home, ".local/share/terok/sandbox")) {
		t.Errorf("plan lacks the state directory:\n%s\n%s", out, errOut)
	}
	entries, err := os.ReadDir(home)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("dry run created %v", entries)
	}
	if code, out, _ := runSetupCLI(t, 1000, home, "uninstall", "--dry-run"); code != 0 || !strings.Contains(out, "nothing to do") {
		t.Errorf("uninstall of a bare host: %d %s", code, out)
	}
}
