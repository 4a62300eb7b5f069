package audit

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"terok.dev/sandbox/common/testkit"
)

// TestDocExamples parses every example record of docs/audit.md (lines of
// its ```jsonl blocks) and reads them back through ReadFile.
func TestDocExamples(t *testing.T) {
	lines := testkit.DocExamples(t, filepath.Join("..", "..", "docs", "audit.md"), 3)
	p := filepath.Join(t.TempDir(), "x.jsonl")
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n{torn\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var warns []string
	recs, err := ReadFile(p, func(m string) { warns = append(warns, m) })
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(lines) {
		t.Fatalf("parsed %d of %d documented records (warnings %v)", len(recs), len(lines), warns)
	}
	if len(warns) != 1 || !strings.Contains(warns[0], "x.jsonl:"+strconv.Itoa(len(lines)+1)) {
		t.Fatalf("corrupt line warning %v, want file:line", warns)
	}
}
