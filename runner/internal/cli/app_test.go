package cli

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ucli "github.com/urfave/cli/v2"

	"terok.dev/sandbox/common/config"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	dir := t.TempDir()
	env := config.Env{EUID: 1000, Home: dir, Getenv: func(k string) string {
		if strings.HasPrefix(k, "TEROK_") || strings.HasPrefix(k, "XDG_") {
			return ""
		}
		return ""
	}}
	code := Run(append([]string{Program}, args...), Deps{Stdout: &out, Stderr: &errb, Env: env})
	return code, out.String(), errb.String()
}

func TestExitCodeRules(t *testing.T) {
	if code, out, _ := runCLI(t); code != ExitError || !strings.Contains(out, "USAGE") {
		t.Errorf("no command: code %d, out %q", code, out)
	}
	if code, out, _ := runCLI(t, "--version"); code != 0 || strings.TrimSpace(out) != "terok-sandbox 0.1.0-dev" {
		t.Errorf("--version: code %d, out %q", code, out)
	}
}

// TestUsageErrorsExit2WithUsage: unknown commands and flags at every level
// exit 2 and print the usage line of the command they were meant for.
func TestUsageErrorsExit2WithUsage(t *testing.T) {
	cases := []struct {
		args            []string
		wantErr, wantUs string
	}{
		{[]string{"frob"}, `unknown command "frob" for "terok-sandbox"`, "Usage: terok-sandbox [global options] COMMAND"},
		{[]string{"--no-such-flag"}, "flag provided but not defined", "Usage: terok-sandbox [global options]"},
		{[]string{"gate", "frob"}, `unknown command "frob" for "gate"`, "Usage: terok-sandbox gate COMMAND"},
		{[]string{"shield", "frob", "x"}, `unknown command "frob"`, "Usage: terok-sandbox shield COMMAND"},
		{[]string{"stop", "--bogus", "x"}, "flag provided but not defined: -bogus", "Usage: terok-sandbox stop [options] NAME..."},
		{[]string{"gate", "sync", "--bogus"}, "flag provided but not defined: -bogus", "Usage: terok-sandbox gate sync [options] PROJECT"},
		{[]string{"proxy", "start", "--log-level", "LOUD"}, `--log-level "LOUD" is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL`, "Usage: terok-sandbox proxy start [options]"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			code, out, errOut := runCLI(t, c.args...)
			if code != ExitUsage || !strings.Contains(errOut, c.wantErr) || !strings.Contains(errOut, c.wantUs) || !strings.Contains(errOut, "--help' for more information") {
				t.Fatalf("code %d, stdout %q, stderr %q", code, out, errOut)
			}
		})
	}
}

func TestGroupsWithoutSubcommandShowHelp(t *testing.T) {
	for _, g := range []string{"gate", "proxy", "ssh", "shield", "credentials"} {
		code, out, errOut := runCLI(t, g)
		if code != 0 || !strings.Contains(out, g) {
			t.Errorf("%s: code %d, out %q, err %q", g, code, out, errOut)
		}
	}
}

// Progress goes to stderr only when it is a terminal and not turned off.
func TestProgressWriter(t *testing.T) {
	_, pty := openPTY(t)
	devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	regular, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer regular.Close()
	cases := []struct {
		name   string
		stderr io.Writer
		want   bool
		shown  bool
	}{
		{"terminal", pty, true, true},
		{"terminal, --quiet", pty, false, false},
		{"buffer", &bytes.Buffer{}, true, false},
		{"/dev/null is no terminal", devNull, true, false},
		{"regular file", regular, true, false},
	}
	for _, c := range cases {
		if got := progressWriter(Deps{Stderr: c.stderr}, c.want); (got != nil) != c.shown || (got != nil && got != c.stderr) {
			t.Errorf("%s: %v", c.name, got)
		}
	}
}

// gate sync and run take --quiet/-q.
func TestQuietFlags(t *testing.T) {
	app := newApp(Deps{Env: config.Env{Home: t.TempDir()}})
	gate := findCommand(app.Commands, "gate")
	for _, cmd := range []*ucli.Command{findCommand(gate.Subcommands, "sync"), findCommand(app.Commands, "run")} {
		found := false
		for _, f := range cmd.Flags {
			if names := f.Names(); len(names) == 2 && names[0] == "quiet" && names[1] == "q" {
				found = true
			}
		}
		if !found {
			t.Errorf("%s has no --quiet/-q", cmd.Name)
		}
	}
}
