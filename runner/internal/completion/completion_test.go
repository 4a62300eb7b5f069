package completion

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	ucli "github.com/urfave/cli/v2"
)

func testApp() *ucli.App {
	return &ucli.App{
		Name:  "tool",
		Flags: []ucli.Flag{&ucli.StringFlag{Name: "config", Aliases: []string{"c"}}},
		Commands: []*ucli.Command{
			{Name: "run", Flags: []ucli.Flag{&ucli.BoolFlag{Name: "detach", Aliases: []string{"d"}}}},
			{Name: "gate", Aliases: []string{"g"}, Subcommands: []*ucli.Command{
				{Name: "start"}, {Name: "status", Flags: []ucli.Flag{&ucli.BoolFlag{Name: "json"}}},
				{Name: "secret", Hidden: true},
			}},
			{Name: "hidden", Hidden: true},
		},
	}
}

func TestTree(t *testing.T) {
	got := Tree(testApp())
	want := []Node{
		{"", []string{"run", "gate", "g"}, []string{"--config", "--help", "--version", "-c"}, []string{"--config", "-c"}},
		{"run", nil, []string{"--detach", "--help", "-d"}, nil},
		{"gate", []string{"start", "status"}, []string{"--help"}, nil},
		{"gate start", nil, []string{"--help"}, nil},
		{"gate status", nil, []string{"--help", "--json"}, nil},
		{"g", []string{"start", "status"}, []string{"--help"}, nil},
		{"g start", nil, []string{"--help"}, nil},
		{"g status", nil, []string{"--help", "--json"}, nil},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Tree:\n got %#v\nwant %#v", got, want)
	}
}

func TestRefusesUnsafeWords(t *testing.T) {
	for _, bad := range []string{"a b", "$(x)", "a'b", "", "-"} {
		n := []Node{{Path: "", Subcommands: []string{bad}}}
		var b bytes.Buffer
		if err := Bash(&b, "tool", n); err == nil {
			t.Errorf("bash accepted %q", bad)
		}
		if err := Zsh(&b, "tool", n); err == nil {
			t.Errorf("zsh accepted %q", bad)
		}
	}
}

func writeScript(t *testing.T, gen func(*bytes.Buffer) error) string {
	t.Helper()
	var b bytes.Buffer
	if err := gen(&b); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// cases: the words on the line (the last is the one being completed) and
// the candidates a shell must offer; nil means "none: fall back to files".
var cases = []struct {
	line []string
	want []string
}{
	{[]string{"tool", ""}, []string{"run", "gate", "g"}},
	{[]string{"tool", "ga"}, []string{"gate"}},
	{[]string{"tool", "-"}, []string{"--config", "--help", "--version", "-c"}},
	{[]string{"tool", "gate", ""}, []string{"start", "status"}},
	{[]string{"tool", "g", "st"}, []string{"start", "status"}},
	{[]string{"tool", "--config", "x", "gate", "sta"}, []string{"start", "status"}},
	{[]string{"tool", "-c", "gate", ""}, []string{"run", "gate", "g"}}, // "gate" is -c's value
	{[]string{"tool", "--config=gate", "gate", ""}, []string{"start", "status"}},
	{[]string{"tool", "--config", ""}, nil},
	{[]string{"tool", "gate", "status", "--"}, []string{"--help", "--json"}},
	{[]string{"tool", "run", ""}, nil},
	{[]string{"tool", "run", "image", ""}, nil},
	{[]string{"tool", "nosuch", ""}, nil},
}

// The bash script through a real bash: COMPREPLY for each line.
func TestBash(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not installed")
	}
	script := writeScript(t, func(b *bytes.Buffer) error { return Bash(b, "tool", Tree(testApp())) })
	for _, tt := range cases {
		t.Run(strings.Join(tt.line, "_"), func(t *testing.T) {
			words := ""
			for _, w := range tt.line {
				words += " '" + w + "'"
			}
			prog := ". " + script + "\nCOMP_WORDS=(" + words + ")\nCOMP_CWORD=" + strconv.Itoa(len(tt.line)-1) +
				"\n_tool\nprintf '%s\\n' \"${COMPREPLY[@]}\"\ncomplete -p tool\n"
			out, err := exec.Command("bash", "--norc", "--noprofile", "-c", prog).CombinedOutput()
			if err != nil {
				t.Fatalf("bash: %v\n%s", err, out)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if last := lines[len(lines)-1]; last != "complete -o default -F _tool tool" {
				t.Fatalf("registration %q", last)
			}
			got := nonEmpty(lines[:len(lines)-1])
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %q want %q", got, tt.want)
			}
		})
	}
}

// The zsh script through a real zsh. compadd and _files exist only inside a
// completion widget, so the test defines recorders of what the script hands
// them; the descent, flag and fallback logic is the script's own.
func TestZsh(t *testing.T) {
	if _, err := exec.LookPath("zsh"); err != nil {
		t.Skip("zsh not installed")
	}
	script := writeScript(t, func(b *bytes.Buffer) error { return Zsh(b, "tool", Tree(testApp())) })
	if out, err := exec.Command("zsh", "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("zsh -n: %v\n%s", err, out)
	}
	data, _ := os.ReadFile(script)
	if !strings.HasPrefix(string(data), "#compdef tool\n") {
		t.Fatal("not a #compdef file")
	}
	for _, tt := range cases {
		t.Run(strings.Join(tt.line, "_"), func(t *testing.T) {
			words := ""
			for _, w := range tt.line {
				words += " '" + w + "'"
			}
			// Filtering by the typed prefix is compadd's job in zsh: the
			// recorder does it the same way.
			prog := "compadd() { shift; local w; for w in \"$@\"; do [[ $w == ${words[CURRENT]}* ]] && print -r -- $w; done; return 0; }\n" +
				"_files() { print -r -- FILES; }\n" +
				"words=(" + words + ")\nCURRENT=" + strconv.Itoa(len(tt.line)) + "\n. " + script + "\n"
			out, err := exec.Command("zsh", "-f", "-c", prog).CombinedOutput()
			if err != nil {
				t.Fatalf("zsh: %v\n%s", err, out)
			}
			got := nonEmpty(strings.Split(strings.TrimSpace(string(out)), "\n"))
			want := tt.want
			if want == nil {
				want = []string{"FILES"}
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got %q want %q", got, want)
			}
		})
	}
}

func nonEmpty(l []string) []string {
	var out []string
	for _, s := range l {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}
