package houserules

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// testkitPath is the shared test-helper package (common/testkit). It and
// its subpackages (common/testkit/scrape) may be imported only from
// _test.go files, so no product binary links them.
const testkitPath = prefix + "common/testkit"

// testkitImporters returns "file:line" of every import of testkitPath (or
// a package below it) in src that is not allowed: in a non-test file
// outside common/testkit.
func testkitImporters(name string, src []byte) ([]string, error) {
	if strings.HasSuffix(name, "_test.go") || strings.HasPrefix(name, "common/testkit/") {
		return nil, nil
	}
	fs := token.NewFileSet()
	f, err := parser.ParseFile(fs, name, src, parser.ImportsOnly)
	if err != nil {
		return nil, err
	}
	var bad []string
	for _, imp := range f.Imports {
		if p, _ := strconv.Unquote(imp.Path.Value); p == testkitPath || strings.HasPrefix(p, testkitPath+"/") {
			bad = append(bad, fs.Position(imp.Pos()).String())
		}
	}
	return bad, nil
}

// TestTestkitOnlyInTests: no non-test file imports common/testkit.
func TestTestkitOnlyInTests(t *testing.T) {
	root := repoRoot(t)
	for _, f := range trackedFiles(t, root, ".go") {
		src, err := readTracked(root, f)
		if err != nil {
			t.Fatal(err)
		}
		if src == nil {
			continue
		}
		bad, err := testkitImporters(f, src)
		if err != nil {
			t.Errorf("%s: %v", f, err)
		}
		for _, b := range bad {
			t.Errorf("%s: imports %s (or a package below it), which only _test.go files may import", b, testkitPath)
		}
	}
}

func TestTestkitRule(t *testing.T) {
	src := []byte("package x\n\nimport (\n\t\"fmt\"\n\t\"" + testkitPath + "\"\n)\n")
	sub := []byte("package x\n\nimport \"" + testkitPath + "/scrape\"\n")
	near := []byte("package x\n\nimport \"" + testkitPath + "s\"\n")
	tests := []struct {
		name string
		want int
	}{
		{"runner/internal/x/x.go", 1},
		{"runner/internal/x/x_test.go", 0},
		{"common/testkit/more.go", 0},
		{filepath.Join("gate", "cmd", "terok-gate", "main.go"), 1},
	}
	for _, tc := range tests {
		bad, err := testkitImporters(tc.name, src)
		if err != nil || len(bad) != tc.want {
			t.Errorf("%s: got %q (%v), want %d", tc.name, bad, err, tc.want)
		}
		if bad, err := testkitImporters(tc.name, sub); err != nil || len(bad) != tc.want {
			t.Errorf("%s, subpackage: got %q (%v), want %d", tc.name, bad, err, tc.want)
		}
	}
	if bad, err := testkitImporters("runner/x.go", near); err != nil || len(bad) != 0 {
		t.Errorf("a package merely named like testkit: got %q (%v)", bad, err)
	}
}
