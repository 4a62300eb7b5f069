package manpage

import (
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
)

const gateLike = `usage: tool --base=DIR (--a | --b) [options]
       tool bridge [flags]

Serves things. A line
that goes on.

.dot starts this paragraph \ with a backslash.

flags:
  -access-log
    	log requests too
  -base-path <project>.git
    	directory of <project>.git (required)
  -bind string
    	listen address (default "127.0.0.1")
  -x	one-letter flag
  -timeout duration
    	how long
    	and more (default 1m0s)
`

func TestParse(t *testing.T) {
	h, err := Parse([]byte(gateLike))
	if err != nil {
		t.Fatal(err)
	}
	want := Help{
		Synopsis:    []string{"tool --base=DIR (--a | --b) [options]", "tool bridge [flags]"},
		Description: []string{"Serves things. A line", "that goes on.", "", ".dot starts this paragraph \\ with a backslash."},
		Flags: []Flag{
			{"access-log", "", "log requests too"},
			{"base-path", "<project>.git", "directory of <project>.git (required)"},
			{"bind", "string", `listen address (default "127.0.0.1")`},
			{"x", "", "one-letter flag"},
			{"timeout", "duration", "how long and more (default 1m0s)"},
		},
	}
	if !reflect.DeepEqual(h, want) {
		t.Fatalf("got  %#v\nwant %#v", h, want)
	}
}

func TestParseRefusesWhatItDoesNotKnow(t *testing.T) {
	for name, in := range map[string]string{
		"no usage":             "  -a\n    \tx\n",
		"text among the flags": "usage: t\n\n  -a\n    \tx\nsurprise\n",
	} {
		if _, err := Parse([]byte(in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// The page renders in groff without a warning, and what the help said is
// in the rendered text.
func TestRoffRenders(t *testing.T) {
	h, err := Parse([]byte(gateLike))
	if err != nil {
		t.Fatal(err)
	}
	p := Page{Name: "tool", Section: "8", Summary: "does things", Version: "1.2.3", Help: h,
		Extra:   []Section{{Title: "bridge", Help: Help{Synopsis: []string{"tool bridge [flags]"}, Description: []string{"Relays."}, Flags: []Flag{{"listen", "string", "socket"}}}}},
		Notes:   []Note{{Title: "Exit status", Paragraphs: []string{"0 or 1.", "'quoted start"}}},
		SeeAlso: []string{"terok-sandbox(1)", "podman(1)"}}
	roff := p.Roff()
	if !strings.HasPrefix(roff, `.TH "TOOL" 8 "" "terok\-sandbox 1.2.3" "terok-sandbox"`) {
		t.Errorf("title line: %.80s", roff)
	}
	for _, l := range strings.Split(roff, "\n") {
		if strings.HasPrefix(l, "'") || (strings.HasPrefix(l, ".") && !strings.HasPrefix(l, ".TH") && !strings.HasPrefix(l, ".SH") &&
			!strings.HasPrefix(l, ".TP") && !strings.HasPrefix(l, ".PP") && !strings.HasPrefix(l, ".nf") && !strings.HasPrefix(l, ".fi") && !strings.HasPrefix(l, ".BR")) {
			t.Errorf("text line taken as a request: %q", l)
		}
	}
	if _, err := exec.LookPath("groff"); err != nil {
		t.Skip("groff not installed")
	}
	cmd := exec.Command("groff", "-man", "-Tutf8", "-ww")
	cmd.Stdin = strings.NewReader(roff)
	cmd.Env = []string{"LC_ALL=C.UTF-8", "PATH=" + os.Getenv("PATH")}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("groff: %v\n%s", err, stderr.String())
	}
	text := stripOverstrike(string(out))
	for _, w := range []string{"tool - does things", "--base-path <project>.git", "--access-log", "how long and more (default 1m0s)",
		".dot starts this paragraph \\ with a backslash.", "BRIDGE", "--listen string", "EXIT STATUS", "'quoted start", "terok-sandbox(1), podman(1)"} {
		if !strings.Contains(text, w) {
			t.Errorf("rendered page lacks %q:\n%s", w, text)
		}
	}
}

// stripOverstrike removes grotty's bold and underline (c\bc, _\bc) and
// the unicode hyphen groff may print for a plain one.
func stripOverstrike(s string) string {
	r := []rune(s)
	var out []rune
	for i := 0; i < len(r); i++ {
		if i+1 < len(r) && r[i+1] == '\b' {
			continue
		}
		if r[i] == '\b' {
			continue
		}
		out = append(out, r[i])
	}
	return strings.NewReplacer("\u2010", "-", "\u2212", "-", "\u2019", "'", "\u2018", "'").Replace(string(out))
}
