package houserules

import (
	"bytes"
	"fmt"
	"go/parser"
	"go/token"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// testkitPath is the shared test-helper package (common/testkit). It and
// its subpackages (common/testkit/scrape) may be imported only from
// _test.go files, so no product binary links them.
const testkitPath = prefix + "common/testkit"

// testOnly are the test-helper packages only _test.go files (and the
// packages themselves) may import: common/testkit and the decider client
// of the interactive tests.
var testOnly = []string{testkitPath, prefix + "shield-hook/internal/decidertest", prefix + "shield-hook/internal/nstest"}

// testkitImporters returns "file:line" of every import of a testOnly
// package (or a package below it) in src that is not allowed: in a
// non-test file outside that package.
func testkitImporters(name string, src []byte) ([]string, error) {
	if strings.HasSuffix(name, "_test.go") {
		return nil, nil
	}
	fs := token.NewFileSet()
	f, err := parser.ParseFile(fs, name, src, parser.ImportsOnly)
	if err != nil {
		return nil, err
	}
	var bad []string
	for _, imp := range f.Imports {
		p, _ := strconv.Unquote(imp.Path.Value)
		for _, only := range testOnly {
			if (p == only || strings.HasPrefix(p, only+"/")) && !strings.HasPrefix(name, strings.TrimPrefix(only, prefix)+"/") {
				bad = append(bad, fs.Position(imp.Pos()).String())
			}
		}
	}
	return bad, nil
}

// TestTestkitOnlyInTests: no non-test file imports common/testkit or
// another testOnly package.
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
			t.Errorf("%s: imports a test-helper package (%s), which only _test.go files may import", b, strings.Join(testOnly, ", "))
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
	dt := []byte("package x\n\nimport \"" + prefix + "shield-hook/internal/decidertest\"\n")
	for name, want := range map[string]int{"shield-hook/internal/resolver/approve.go": 1, "shield-hook/internal/resolver/x_test.go": 0} {
		if bad, err := testkitImporters(name, dt); err != nil || len(bad) != want {
			t.Errorf("decidertest from %s: got %q (%v), want %d", name, bad, err, want)
		}
	}
}

// startsBinaries matches a test that builds or starts a program of its own
// (`go build`, a daemon's main package, systemd-socket-activate) or
// resolves the sandbox's roots in-process (a config.Env made by hand, whose
// EUID 0 means /var/lib/terok when a variable is missing).
var startsBinaries = regexp.MustCompile(`"go", "build"|"build", "-o"|systemd-socket-activate|/cmd/terok-|config\.Env\{|testkit\.Env\(|config\.FromOS\(\)`)

// guardExempt are the test packages that start binaries without
// testkit.Run: the e2e tests give every runner its own roots through
// runner/internal/testharness, and some of them install system-wide on
// purpose (shield setup --root); this module only reads source.
var guardExempt = map[string]string{
	"runner/e2e":      "roots per runner from testharness; installs system-wide on purpose",
	"test/houserules": "builds nothing it runs",
	"common/config":   "common/testkit imports it; its tests only resolve roots, they write none",
}

// unguarded returns the test package directories among files (path ->
// source of each tracked _test.go) whose tests build or start a binary but
// whose TestMain does not go through testkit.Run.
func unguarded(files map[string][]byte) []string {
	starts, guarded := map[string]bool{}, map[string]bool{}
	for name, src := range files {
		dir := filepath.ToSlash(filepath.Dir(name))
		if startsBinaries.Match(src) {
			starts[dir] = true
		}
		if strings.Contains(string(src), "testkit.Run(m)") {
			guarded[dir] = true
		}
	}
	var bad []string
	for dir := range starts {
		if _, ok := guardExempt[dir]; !ok && !guarded[dir] {
			bad = append(bad, dir)
		}
	}
	sort.Strings(bad)
	return bad
}

// TestBinaryStartingTestsGuardDefaultRoots: a test package that starts
// the project's binaries runs through testkit.Run, which gives every child
// fresh roots and fails the run when one wrote under a default root
// (docs/testing.md, Shared test helpers) — as a child started through
// systemd-socket-activate did, with an empty environment.
func TestBinaryStartingTestsGuardDefaultRoots(t *testing.T) {
	root := repoRoot(t)
	files := map[string][]byte{}
	for _, f := range trackedFiles(t, root, "_test.go") {
		src, err := readTracked(root, f)
		if err != nil {
			t.Fatal(err)
		}
		files[f] = src
	}
	for _, dir := range unguarded(files) {
		t.Errorf("%s: its tests build or start a binary or resolve the roots, but no TestMain there calls testkit.Run(m) "+
			"(add `func TestMain(m *testing.M) { os.Exit(testkit.Run(m)) }`)", dir)
	}
}

func TestGuardRule(t *testing.T) {
	files := map[string][]byte{
		"a/x_test.go":          []byte(`exec.Command("go", "build", "-o", bin, ".")`),
		"a/main_test.go":       []byte(`func TestMain(m *testing.M) { os.Exit(testkit.Run(m)) }`),
		"b/x_test.go":          []byte(`exec.Command("systemd-socket-activate", "-l", addr, bin)`),
		"c/x_test.go":          []byte(`exec.Command("ls")`),
		"d/x_test.go":          []byte(`env := config.Env{EUID: 0, Home: dir}`),
		"runner/e2e/x_test.go": []byte(`exec.Command("go", "build", "-o", bin, ".")`),
	}
	if got := strings.Join(unguarded(files), " "); got != "b d" {
		t.Errorf("unguarded = %q, want b d", got)
	}
}

// freePortPick is a test picking a free port by hand: listen on port 0,
// read the port, close. testkit.FreePort is the one copy (docs/testing.md,
// Shared test helpers); there were eleven.
var freePortPick = regexp.MustCompile(`defer \w+\.Close\(\)\s*\n\s*return \w+\.Addr\(\)\.\(\*net\.TCPAddr\)\.Port|\w+\.Addr\(\)\.\(\*net\.TCPAddr\)\.Port\s*\n\s*\w+\.Close\(\)`)

// freePortCopies returns "file:line" of every hand-made free-port pick in
// a _test.go file outside common/testkit.
func freePortCopies(name string, src []byte) []string {
	if !strings.HasSuffix(name, "_test.go") || strings.HasPrefix(name, "common/testkit/") {
		return nil
	}
	var out []string
	for _, m := range freePortPick.FindAllIndex(src, -1) {
		out = append(out, fmt.Sprintf("%s:%d", name, bytes.Count(src[:m[0]], []byte("\n"))+1))
	}
	return out
}

// TestOneFreePortHelper: tests take a free port from testkit.FreePort.
func TestOneFreePortHelper(t *testing.T) {
	root := repoRoot(t)
	for _, f := range trackedFiles(t, root, "_test.go") {
		src, err := readTracked(root, f)
		if err != nil {
			t.Fatal(err)
		}
		for _, at := range freePortCopies(f, src) {
			t.Errorf("%s: picks a free port by hand; use testkit.FreePort(t)", at)
		}
	}
}

func TestFreePortRule(t *testing.T) {
	inline := []byte("l, _ := net.Listen(\"tcp\", \"127.0.0.1:0\")\nport := l.Addr().(*net.TCPAddr).Port\nl.Close()\n")
	helper := []byte("func p(t *testing.T) int {\n\tl, _ := net.Listen(\"tcp\", \"127.0.0.1:0\")\n\tdefer l.Close()\n\treturn l.Addr().(*net.TCPAddr).Port\n}\n")
	serving := []byte("l, _ := net.Listen(\"tcp\", \"127.0.0.1:0\")\nport := l.Addr().(*net.TCPAddr).Port\ngo srv.Serve(l)\n")
	for _, c := range []struct {
		name string
		src  []byte
		want int
	}{
		{"a/x_test.go", inline, 1},
		{"a/x_test.go", helper, 1},
		{"a/x_test.go", serving, 0},
		{"a/x.go", inline, 0},
		{"common/testkit/testkit.go", helper, 0},
	} {
		if got := freePortCopies(c.name, c.src); len(got) != c.want {
			t.Errorf("%s %q: %v, want %d", c.name, c.src, got, c.want)
		}
	}
}
