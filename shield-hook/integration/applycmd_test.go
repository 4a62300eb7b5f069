package integration

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/shield-hook/internal/hook"
)

// TestApplyMainUsage: apply-ruleset takes exactly --mode=MODE of a known
// mode (exit 2 with the usage otherwise) and refuses an empty ruleset.
func TestApplyMainUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		in   string
		code int
		want string
	}{
		{[]string{"hook", shieldbundle.ApplySubcommand}, "", 2, "usage:"},
		{[]string{"hook", shieldbundle.ApplySubcommand, "--mode=interactive", "x"}, "", 2, "usage:"},
		{[]string{"hook", shieldbundle.ApplySubcommand, "interactive"}, "", 2, "usage:"},
		{[]string{"hook", shieldbundle.ApplySubcommand, "--mode=permissive"}, "", 2, "unknown shield mode"},
		{[]string{"hook", shieldbundle.ApplySubcommand, "--mode=interactive"}, "delete table inet terok_shield\n", 1, "empty ruleset"},
	} {
		var stderr bytes.Buffer
		code := hook.ApplyMain(context.Background(), tc.args, strings.NewReader(tc.in), &stderr)
		if code != tc.code || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%q: exit %d %q, want %d with %q", tc.args, code, stderr.String(), tc.code, tc.want)
		}
	}
}
