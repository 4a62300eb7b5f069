package cli

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"terok.dev/sandbox/runner/internal/seccomp"
)

// installTestProfile puts a valid seccomp profile into cfgDir: every launch
// needs one (docs/seccomp.md).
func installTestProfile(t *testing.T, cfgDir string) {
	t.Helper()
	prof, err := seccomp.Transform([]byte(`{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(cfgDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(seccomp.Path(cfgDir), prof, 0o644); err != nil {
		t.Fatal(err)
	}
}

// withoutSeccomp checks that argv passes the config root's profile and
// returns argv without that pair, for the tests that compare whole argv.
func withoutSeccomp(t *testing.T, argv []string) []string {
	t.Helper()
	for i := 0; i+1 < len(argv); i++ {
		if argv[i] == "--security-opt" && strings.HasPrefix(argv[i+1], "seccomp=") {
			if !strings.HasSuffix(argv[i+1], "/cfg/"+seccomp.FileName) {
				t.Fatalf("seccomp profile %q is not the config root's", argv[i+1])
			}
			return append(append([]string(nil), argv[:i]...), argv[i+2:]...)
		}
	}
	t.Fatalf("no --security-opt seccomp= in %q", argv)
	return nil
}

var printedSeccomp = regexp.MustCompile(` --security-opt seccomp=\S+/cfg/` + regexp.QuoteMeta(seccomp.FileName))

// withoutPrintedSeccomp is withoutSeccomp for the printed command line.
func withoutPrintedSeccomp(t *testing.T, out string) string {
	t.Helper()
	if !printedSeccomp.MatchString(out) {
		t.Fatalf("printed command has no seccomp profile: %q", out)
	}
	return printedSeccomp.ReplaceAllString(out, "")
}
