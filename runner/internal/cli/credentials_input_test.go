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

// credentials set checks --type against the types the proxy knows, and
// delete of a credential that is not stored is an error.
func TestCredentialTypesAndMissingCredential(t *testing.T) {
	home := t.TempDir()
	vars := testkit.RootVars(home)
	// Plaintext store: this test is about the CLI's checks, not the
	// keystore.
	if err := os.MkdirAll(vars["TEROK_SANDBOX_CONFIG_DIR"], 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vars["TEROK_SANDBOX_CONFIG_DIR"], config.FileName), []byte("credentials_encryption = false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(stdin string, args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		env := testkit.Env(vars, 1000, home)
		code := Run(append([]string{Program}, args...), Deps{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader(stdin), Env: env})
		return code, out.String(), errb.String()
	}
	cases := []struct {
		stdin  string
		args   []string
		code   int
		outSub string
		errSub string
	}{
		{"s3cret", []string{"credentials", "set", "claude", "--type", "bogus"}, ExitUsage, "", `--type "bogus" is not one of api_key, oauth, oauth_token, pat, token`},
		{"s3cret", []string{"credentials", "set", "claude", "--type", ""}, ExitUsage, "", `--type "" is not one of`},
		// Checked before the secret is read: no stdin, still the usage error.
		{"", []string{"credentials", "set", "claude", "--type", "bogus"}, ExitUsage, "", `--type "bogus" is not one of`},
		{"s3cret", []string{"credentials", "set", "claude", "--type", "pat"}, 0, "Stored credential claude in set default (type pat).", ""},
		{"", []string{"credentials", "delete", "nosuch"}, ExitError, "", "Error: no credential nosuch in set default"},
		{"", []string{"credentials", "delete", "claude", "--set", "other"}, ExitError, "", "Error: no credential claude in set other"},
		{"", []string{"credentials", "delete", "claude"}, 0, "Deleted credential claude from set default.", ""},
		{"", []string{"credentials", "delete", "claude"}, ExitError, "", "Error: no credential claude in set default"},
	}
	for _, c := range cases {
		code, out, errOut := run(c.stdin, c.args...)
		if code != c.code || !strings.Contains(out, c.outSub) || !strings.Contains(errOut, c.errSub) {
			t.Fatalf("%q: exit %d out %q err %q; want %d %q %q", c.args, code, out, errOut, c.code, c.outSub, c.errSub)
		}
		if strings.Contains(out+errOut, "s3cret") {
			t.Fatalf("%q printed the secret", c.args)
		}
	}
}
