package houserules

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// The citation rule (DEVELOPERS.md, "Layout"): comments and docs cite the
// project's own documentation as `docs/<file>.md, <Heading>`, never an
// outside specification by section number and never a file outside the
// repository. These checks run over every tracked .go, .md and .sh file.

var (
	// sect is the section sign: an outside document cited by section
	// number ("<file>.md <sect>3", "spec <sect>7", a bare "<sect>N").
	// Only RFC sections ("RFC 1035 <sect>4.1") are fine: public standards.
	sect        = "\u00a7"
	sectionSign = regexp.MustCompile(sect)
	rfcSection  = regexp.MustCompile(`RFC \d+ ` + sect + `$`)
	// outside is a path into the sibling folder of read-only material that
	// is not part of this repository.
	outside = "shared" + "/"
	// docCite is a citation of one of our documents, optionally followed by
	// ", <Heading>".
	docCite       = regexp.MustCompile(`(?:^|[^A-Za-z0-9_./-])docs/([A-Za-z0-9_-]+\.md)(, )?`)
	heading       = regexp.MustCompile(`^#{1,6}\s+(.+?)\s*#*\s*$`)
	parenthetical = regexp.MustCompile(`\s+\([^()]*\)$`)
	// boldLead is a paragraph or list item that starts with a bold name
	// ("**Closed DNS** (issue 11) ...", "- **Host-facts cache.** ..."): a
	// named part of a section, citable like a heading.
	boldLead = regexp.MustCompile(`^\s*(?:[-*]\s+)?\*\*([^*]+?)\*\*`)
)

// trackedFiles lists the tracked files of the repository with the given
// suffixes, relative to root.
func trackedFiles(t *testing.T, root string, suffixes ...string) []string {
	t.Helper()
	cmd := exec.Command("git", "ls-files", "-z")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git ls-files in %s: %v (the citation checks need git and a checkout)", root, err)
	}
	var files []string
	for _, f := range bytes.Split(out, []byte{0}) {
		name := string(f)
		for _, s := range suffixes {
			if strings.HasSuffix(name, s) {
				files = append(files, name)
				break
			}
		}
	}
	if len(files) == 0 {
		t.Fatalf("git ls-files in %s listed no %v files", root, suffixes)
	}
	return files
}

// readTracked reads a tracked file; nil, nil when it was deleted in the
// work tree and the deletion is not committed yet.
func readTracked(root, name string) ([]byte, error) {
	data, err := os.ReadFile(filepath.Join(root, name))
	if os.IsNotExist(err) {
		return nil, nil
	}
	return data, err
}

// docHeadings maps each docs/*.md file name to its headings (outside code
// fences).
func docHeadings(t *testing.T, root string) map[string][]string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no docs/*.md under %s (%v)", root, err)
	}
	out := map[string][]string{}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(p)] = parseHeadings(string(data))
	}
	return out
}

// parseHeadings returns the ATX headings of a markdown text, longest first
// (so a citation matches the most specific heading), skipping fenced code.
// A heading that ends in a parenthetical ("Key sources (first version and
// later)") or its backticks may also be cited without them (headingForms);
// a bold paragraph lead counts as a heading.
func parseHeadings(text string) []string {
	var hs []string
	fence := false
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			fence = !fence
			continue
		}
		if fence {
			continue
		}
		if m := boldLead.FindStringSubmatch(l); m != nil {
			hs = append(hs, strings.TrimSuffix(m[1], "."))
		}
		if m := heading.FindStringSubmatch(l); m != nil {
			hs = append(hs, headingForms(m[1])...)
		}
	}
	sort.SliceStable(hs, func(i, j int) bool { return len(hs[i]) > len(hs[j]) })
	return hs
}

// headingForms are the ways a heading may be cited: as written, without a
// trailing parenthetical, and either of these without backticks
// ("Channel `proxy` (credential proxy)" is also "Channel proxy"), and the
// part before the first comma ("Files, rotation, modes" is also "Files").
func headingForms(h string) []string {
	forms := []string{h}
	add := func(f string) {
		for _, g := range forms {
			if g == f {
				return
			}
		}
		if f != "" {
			forms = append(forms, f)
		}
	}
	short := parenthetical.ReplaceAllString(h, "")
	add(short)
	if i := strings.Index(short, ", "); i > 0 { // "Files, rotation, modes" is also "Files"
		add(short[:i])
	}
	add(strings.ReplaceAll(h, "`", ""))
	add(strings.ReplaceAll(short, "`", ""))
	return forms
}

// continuation strips what starts a wrapped comment or markdown line so a
// heading cited across a line break still reads as one text.
func continuation(l string) string {
	l = strings.TrimSpace(l)
	for _, p := range []string{"//", "#", "*", ">"} {
		if strings.HasPrefix(l, p) {
			l = strings.TrimSpace(strings.TrimPrefix(l, p))
			break
		}
	}
	return l
}

// citationProblems returns "file:line: problem" for every rule the text of
// one file breaks. headings is docHeadings' result.
func citationProblems(name, text string, headings map[string][]string) []string {
	var probs []string
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		at := fmt.Sprintf("%s:%d", name, i+1)
		for _, loc := range sectionSign.FindAllStringIndex(l, -1) {
			if !rfcSection.MatchString(l[:loc[1]]) {
				probs = append(probs, at+": a section-number citation ("+sect+"): cite `docs/<file>.md, <Heading>` instead")
				break
			}
		}
		if strings.Contains(l, outside) {
			probs = append(probs, at+": a reference to ../"+outside+" (not part of this repository): cite docs/ instead")
		}
		for _, m := range docCite.FindAllStringSubmatchIndex(l, -1) {
			file := l[m[2]:m[3]]
			hs, ok := headings[file]
			if !ok {
				probs = append(probs, fmt.Sprintf("%s: docs/%s does not exist", at, file))
				continue
			}
			if m[4] < 0 { // no ", <Heading>": a citation of the whole page
				continue
			}
			rest := l[m[5]:]
			for j := i + 1; j < len(lines) && j <= i+2; j++ {
				rest += " " + continuation(lines[j])
			}
			// The heading may be quoted: docs/gate.md, "Request handling".
			rest = strings.TrimPrefix(rest, `"`)
			// Prose after the comma ("docs/audit.md, the contract ...") is
			// no citation: a cited heading starts with a capital, a
			// backtick or a quote, or is a heading as written.
			if !startsWithHeading(rest, hs) && !startsLower(rest) {
				probs = append(probs, fmt.Sprintf("%s: docs/%s, %q names no heading of docs/%s", at, file, clip(rest, 50), file))
			}
		}
	}
	return probs
}

// startsWithHeading reports whether s begins with one of hs, followed by
// something that is not part of a word.
func startsWithHeading(s string, hs []string) bool {
	for _, h := range hs {
		if !strings.HasPrefix(s, h) {
			continue
		}
		after := s[len(h):]
		if after == "" {
			return true
		}
		c := after[0]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return true
		}
	}
	return false
}

func startsLower(s string) bool { return s != "" && s[0] >= 'a' && s[0] <= 'z' }

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// selfFile is this file, relative to the repository root.
const selfFile = "test/houserules/citations_test.go"

// TestCitations: no section-number citation, no reference outside the
// repository, and every `docs/<file>.md, <Heading>` names a real heading.
func TestCitations(t *testing.T) {
	root := repoRoot(t)
	headings := docHeadings(t, root)
	var probs []string
	for _, f := range trackedFiles(t, root, ".go", ".md", ".sh") {
		if f == selfFile {
			continue // its rule tests hold broken citations on purpose
		}
		data, err := readTracked(root, f)
		if err != nil {
			t.Fatal(err)
		}
		if data == nil {
			continue
		}
		probs = append(probs, citationProblems(f, string(data), headings)...)
	}
	for _, p := range probs {
		t.Error(p)
	}
}

// TestCitationRules proves each rule can fail, on texts made up here.
func TestCitationRules(t *testing.T) {
	headings := map[string][]string{
		"gate.md": parseHeadings("# Gate\n\n## Request handling\n\n- **Routing.** the pattern\n\n```\n# Not a heading\n```\n## Mirror manager\n"),
		"sec.md":  parseHeadings("## Key sources (first version and later)\n## Channel `proxy` (credential proxy)\n## Files, rotation, modes\n### poststop\n"),
	}
	tests := []struct {
		name, text string
		want       int
	}{
		{"own citation", "// Parse (docs/gate.md, Request handling).", 0},
		{"citation wrapped over two comment lines", "// the router (docs/gate.md, Request\n// handling) and more", 0},
		{"whole page", "see docs/gate.md for the flags", 0},
		{"quoted heading", `(docs/gate.md, "Mirror manager")`, 0},
		{"heading without its parenthetical", "(docs/sec.md, Key sources)", 0},
		{"parenthetical kept", "(docs/sec.md, Key sources (first version and later))", 0},
		{"without backticks and parenthetical", "(docs/sec.md, Channel proxy)", 0},
		{"with backticks", "(docs/sec.md, Channel `proxy`)", 0},
		{"first part of a heading with commas", "(docs/sec.md, Files)", 0},
		{"prose after the comma", "see docs/sec.md, the contract", 0},
		{"lower-case heading", "(docs/sec.md, poststop)", 0},
		{"RFC section", "// built by hand (RFC 1035 " + sect + "4.1)", 0},
		{"outside spec by number", "// the router (gate-server.md " + sect + "2)", 1},
		{"bare section sign", "// the router (" + sect + "2)", 1},
		{"spec section", "as spec " + sect + "9 says", 1},
		{"path outside the repository", "formats are in ../" + outside + "spec/", 1},
		{"missing page", "(docs/nothere.md, Request handling)", 1},
		{"bold paragraph lead", "(docs/gate.md, Routing)", 0},
		{"missing heading", "(docs/gate.md, Auth)", 1},
		{"heading inside a code fence", "(docs/gate.md, Not a heading)", 1},
		{"heading prefix of a longer word", "(docs/gate.md, Mirror managers)", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := citationProblems("x.go", tc.text, headings)
			if len(got) != tc.want {
				t.Errorf("%q: got %d problems %q, want %d", tc.text, len(got), got, tc.want)
			}
		})
	}
}
