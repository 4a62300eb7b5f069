package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/common/testkit"
)

// __complete and shield entries: names from the temporary roots, usage
// errors exit 2, a missing profile exit 1, and completion creates nothing.
func TestCompleteAndProfiles(t *testing.T) {
	home := t.TempDir()
	vars := testkit.RootVars(home)
	for _, d := range []string{"state/gate/alpha.git", "state/gate/notamirror", "state/gate/.hidden.git", "state/ssh-keys/beta", "umbrella/shield/profiles", "cfg"} {
		if err := os.MkdirAll(filepath.Join(home, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for p, data := range map[string]string{
		"umbrella/shield/profiles/mine.txt":     "example.org\n203.0.113.7\n",
		"umbrella/shield/profiles/bad name.txt": "x.org\n",
		"cfg/" + config.FileName:                "credentials_encryption = false\n",
	} {
		if err := os.WriteFile(filepath.Join(home, p), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	run := func(stdin string, args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		env := testkit.Env(vars, 1000, home)
		code := Run(append([]string{Program}, args...), Deps{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader(stdin), Env: env})
		return code, out.String(), errb.String()
	}
	// No database yet: no credentials, and none is created.
	if code, out, errOut := run("", "__complete", "credentials"); code != 0 || out != "" {
		t.Fatalf("credentials before the store: %d %q %q", code, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(home, "cred")); err == nil {
		t.Fatal("__complete credentials created the credentials directory")
	}
	if code, _, errOut := run("s3cret", "credentials", "set", "claude"); code != 0 {
		t.Fatalf("credentials set: %d %s", code, errOut)
	}
	cases := []struct {
		args    []string
		code    int
		out     string
		errPart string
	}{
		{[]string{"__complete", "projects"}, 0, "alpha\nbeta\n", ""},
		{[]string{"__complete", "profiles"}, 0, "base\ndev-node\ndev-python\ndev-standard\nmine\nnvidia-hpc\n", ""},
		{[]string{"__complete", "credentials"}, 0, "claude\n", ""},
		{[]string{"__complete", "credentials", "--set", "other"}, 0, "", ""},
		{[]string{"__complete", "bogus"}, ExitUsage, "", `KIND "bogus" is not one of containers, projects, profiles, credentials`},
		{[]string{"__complete"}, ExitUsage, "", "Usage: terok-sandbox __complete [options] KIND"},
		{[]string{"shield", "entries", "mine", "--json"}, 0, "[\n  \"example.org\",\n  \"203.0.113.7\"\n]\n", ""},
		{[]string{"shield", "entries", "mine", "mine"}, 0, "example.org\n203.0.113.7\n", ""},
		{[]string{"shield", "entries", "nosuch"}, ExitError, "", "Profile not found: 'nosuch'"},
		{[]string{"shield", "entries", "../etc"}, ExitUsage, "", `"../etc" is not a profile name`},
		{[]string{"shield", "entries"}, ExitUsage, "", "name at least one profile"},
	}
	for _, c := range cases {
		code, out, errOut := run("", c.args...)
		if code != c.code || out != c.out || !strings.Contains(errOut, c.errPart) {
			t.Errorf("%q: exit %d out %q err %q; want %d %q %q", c.args, code, out, errOut, c.code, c.out, c.errPart)
		}
	}
	// Hidden: neither in the help nor a command completion offers.
	if _, out, _ := run("", "--help"); strings.Contains(out, "__complete") {
		t.Error("__complete is listed in the help")
	}
}
