package completion

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
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
			{Name: "run", Usage: "run it", ArgsUsage: "[--] [COMMAND [ARG...]]", Flags: []ucli.Flag{&ucli.BoolFlag{Name: "detach", Aliases: []string{"d"}, Usage: "in the background"}}},
			{Name: "gate", Aliases: []string{"g"}, Usage: "the gate", Subcommands: []*ucli.Command{
				{Name: "start"}, {Name: "status", Flags: []ucli.Flag{&ucli.BoolFlag{Name: "json"}}},
				{Name: "secret", Hidden: true},
				{Name: "revoke", ArgsUsage: "PROJECT TASK"},
			}},
			{Name: "logs", ArgsUsage: "NAME", Flags: []ucli.Flag{&ucli.IntFlag{Name: "tail"}}},
			{Name: "stop", ArgsUsage: "NAME..."},
			{Name: "ps", Flags: []ucli.Flag{&ucli.StringFlag{Name: "project"}, &ucli.StringFlag{Name: "prefix"}}},
			{Name: "hidden", Hidden: true},
		},
	}
}

// shape is a Node without its help texts.
type shape struct {
	Path                           string
	Subcommands, Flags, ValueFlags []string
	Args                           []string
	ArgsRepeat                     bool
	FlagKinds                      []string
}

func TestTree(t *testing.T) {
	nodes := Tree(testApp())
	var got []shape
	for _, n := range nodes {
		got = append(got, shape{n.Path, n.Subcommands, n.Flags, n.ValueFlags, n.Args, n.ArgsRepeat, n.FlagKinds})
	}
	gateSubs := []string{"start", "status", "revoke"}
	want := []shape{
		{"", []string{"run", "gate", "g", "logs", "stop", "ps"}, []string{"--config", "--help", "--version", "-c"}, []string{"--config", "-c"}, nil, false, nil},
		{"run", nil, []string{"--detach", "--help", "-d"}, nil, nil, false, nil},
		{"gate", gateSubs, []string{"--help"}, nil, nil, false, nil},
		{"gate start", nil, []string{"--help"}, nil, nil, false, nil},
		{"gate status", nil, []string{"--help", "--json"}, nil, nil, false, nil},
		{"gate revoke", nil, []string{"--help"}, nil, []string{KindProject}, false, nil},
		{"g", gateSubs, []string{"--help"}, nil, nil, false, nil},
		{"g start", nil, []string{"--help"}, nil, nil, false, nil},
		{"g status", nil, []string{"--help", "--json"}, nil, nil, false, nil},
		{"g revoke", nil, []string{"--help"}, nil, []string{KindProject}, false, nil},
		{"logs", nil, []string{"--help", "--tail"}, []string{"--tail"}, []string{KindContainer}, false, nil},
		{"stop", nil, []string{"--help"}, nil, []string{KindContainer}, true, nil},
		{"ps", nil, []string{"--help", "--prefix", "--project"}, []string{"--prefix", "--project"}, nil, false, []string{"--project=" + KindProject}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Tree:\n got %#v\nwant %#v", got, want)
	}
	if h := nodes[0].Help; h["gate"] != "the gate" || h["--help"] != "show help" || h["--version"] == "" {
		t.Errorf("top help %q", h)
	}
	if h := nodes[1].Help; h["-d"] != "in the background" || h["--detach"] != "in the background" {
		t.Errorf("run help %q", h)
	}
}

func TestArgKinds(t *testing.T) {
	for _, tt := range []struct {
		usage   string
		kinds   []string
		repeat  bool
		unknown []string
	}{
		{"", nil, false, nil},
		{"NAME", []string{KindContainer}, false, nil},
		{"NAME...", []string{KindContainer}, true, nil},
		{"CONTAINER TARGET", []string{KindContainer}, false, nil},
		{"PROJECT TASK", []string{KindProject}, false, nil},
		{"TASK PROJECT", []string{"", KindProject}, false, nil},
		{"PROJECT|REPO_PATH", []string{KindProject}, false, nil},
		{"[PROFILE...]", []string{KindProfile}, true, nil},
		{"PROVIDER", []string{KindCredential}, false, nil},
		{"[--] [COMMAND [ARG...]]", nil, false, nil},
		{"WIDGET NAME", []string{"", KindContainer}, false, []string{"WIDGET"}},
	} {
		k, r, u := ArgKinds(tt.usage)
		if !reflect.DeepEqual(k, tt.kinds) || r != tt.repeat || !reflect.DeepEqual(u, tt.unknown) {
			t.Errorf("ArgKinds(%q) = %q %v %q; want %q %v %q", tt.usage, k, r, u, tt.kinds, tt.repeat, tt.unknown)
		}
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
// the candidates a shell must offer; nil means "none: fall back to files",
// empty "none at all" (a name is being completed and none matches).
// Dynamic values come from the test's tool (toolScript): containers c-one,
// c-two; projects alpha, p1.
var cases = []struct {
	line []string
	want []string
}{
	{[]string{"tool", ""}, []string{"run", "gate", "g", "logs", "stop", "ps"}},
	{[]string{"tool", "ga"}, []string{"gate"}},
	{[]string{"tool", "-"}, []string{"--config", "--help", "--version", "-c"}},
	{[]string{"tool", "gate", ""}, []string{"start", "status", "revoke"}},
	{[]string{"tool", "g", "st"}, []string{"start", "status"}},
	{[]string{"tool", "--config", "x", "gate", "sta"}, []string{"start", "status"}},
	{[]string{"tool", "-c", "gate", ""}, []string{"run", "gate", "g", "logs", "stop", "ps"}}, // "gate" is -c's value
	{[]string{"tool", "--config=gate", "gate", ""}, []string{"start", "status", "revoke"}},
	{[]string{"tool", "--config", ""}, nil},
	{[]string{"tool", "gate", "status", "--"}, []string{"--help", "--json"}},
	{[]string{"tool", "run", ""}, nil},
	{[]string{"tool", "run", "image", ""}, nil},
	{[]string{"tool", "run", "--", "-"}, nil}, // after --, the command's own words
	{[]string{"tool", "nosuch", ""}, nil},
	{[]string{"tool", "logs", ""}, []string{"c-one", "c-two"}},
	{[]string{"tool", "logs", "c-t"}, []string{"c-two"}},
	{[]string{"tool", "logs", "--tail", "5", ""}, []string{"c-one", "c-two"}},
	{[]string{"tool", "logs", "--tail", ""}, nil},
	{[]string{"tool", "logs", "c-one", ""}, nil}, // one NAME only
	{[]string{"tool", "stop", "c-one", "c-"}, []string{"c-one", "c-two"}},
	{[]string{"tool", "gate", "revoke", ""}, []string{"alpha", "p1"}},
	{[]string{"tool", "g", "revoke", "p1", ""}, nil}, // TASK
	{[]string{"tool", "ps", "--project", ""}, []string{"alpha", "p1"}},
	{[]string{"tool", "ps", "--project", "a"}, []string{"alpha"}},
	{[]string{"tool", "ps", "--prefix", ""}, nil},
	{[]string{"tool", "logs", "zz"}, []string{}},
}

// toolDir holds the test's `tool`: what a program's `__complete KIND`
// prints. Its projects include a line a shell must never run.
func toolDir(t *testing.T) (dir, marker string) {
	t.Helper()
	dir = t.TempDir()
	marker = filepath.Join(dir, "PWNED")
	script := "#!/bin/sh\n[ \"$1\" = __complete ] || exit 2\ncase \"$2\" in\n" +
		"containers) printf 'c-one\\nc-two\\n' ;;\n" +
		"projects) printf 'alpha\\np1\\n'; echo '$(touch " + marker + ")' ;;\n" +
		"*) exit 2 ;;\nesac\n"
	if err := os.WriteFile(filepath.Join(dir, "tool"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, marker
}

// shellEnv puts the test's tool first on PATH.
func shellEnv(dir string) []string {
	return append(os.Environ(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"))
}

// The bash script through a real bash: COMPREPLY for each line.
func TestBash(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not installed")
	}
	script := writeScript(t, func(b *bytes.Buffer) error { return Bash(b, "tool", Tree(testApp())) })
	dir, marker := toolDir(t)
	for _, tt := range cases {
		t.Run(strings.Join(tt.line, "_"), func(t *testing.T) {
			words := ""
			for _, w := range tt.line {
				words += " '" + w + "'"
			}
			prog := ". " + script + "\nCOMP_WORDS=(" + words + ")\nCOMP_CWORD=" + strconv.Itoa(len(tt.line)-1) +
				"\n_tool\nprintf '%s\\n' \"${COMPREPLY[@]}\"\ncomplete -p tool\n"
			cmd := exec.Command("bash", "--norc", "--noprofile", "-c", prog)
			cmd.Env = shellEnv(dir)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("bash: %v\n%s", err, out)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if last := lines[len(lines)-1]; last != "complete -o default -F _tool tool" {
				t.Fatalf("registration %q", last)
			}
			got := nonEmpty(lines[:len(lines)-1])
			if !reflect.DeepEqual(got, tt.want) && (len(got) > 0 || len(tt.want) > 0) {
				t.Fatalf("got %q want %q", got, tt.want)
			}
		})
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("bash ran a command from a completion value")
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
	dir, marker := toolDir(t)
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
			cmd := exec.Command("zsh", "-f", "-c", prog)
			cmd.Env = shellEnv(dir)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("zsh: %v\n%s", err, out)
			}
			got := nonEmpty(strings.Split(strings.TrimSpace(string(out)), "\n"))
			want := tt.want
			if want == nil {
				want = []string{"FILES"}
			}
			if !reflect.DeepEqual(got, want) && (len(got) > 0 || len(want) > 0) {
				t.Fatalf("got %q want %q", got, want)
			}
		})
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("zsh ran a command from a completion value")
	}
}

// The fish script through a real fish: `complete -C LINE` is what fish
// offers at the end of LINE (candidates with descriptions after a tab).
// Files are offered from an empty working directory holding one file, so
// "none: fall back to files" shows as that file.
func TestFish(t *testing.T) {
	if _, err := exec.LookPath("fish"); err != nil {
		t.Skip("fish not installed")
	}
	script := writeScript(t, func(b *bytes.Buffer) error { return Fish(b, "tool", Tree(testApp())) })
	dir, marker := toolDir(t)
	wd := t.TempDir()
	if err := os.WriteFile(filepath.Join(wd, "afile"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range cases {
		t.Run(strings.Join(tt.line, "_"), func(t *testing.T) {
			line := strings.Join(tt.line, " ")
			cmd := exec.Command("fish", "--no-config", "-c", "source "+script+"; complete -C "+fishQuote(line))
			cmd.Env = shellEnv(dir)
			cmd.Dir = wd
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("fish: %v\n%s", err, out)
			}
			var got []string
			for _, l := range nonEmpty(strings.Split(string(out), "\n")) {
				w, _, _ := strings.Cut(l, "\t")
				got = append(got, w)
			}
			want := tt.want
			if want == nil {
				want = []string{"afile"}
				// fish itself completes an option-looking word after --.
				if cur := tt.line[len(tt.line)-1]; cur != "" && !strings.HasPrefix("afile", cur) {
					want = nil
				}
			}
			sort.Strings(got)
			want = append([]string(nil), want...)
			sort.Strings(want)
			if !reflect.DeepEqual(got, want) && (len(got) > 0 || len(want) > 0) {
				t.Fatalf("got %q want %q\n%s", got, want, out)
			}
		})
	}
	out, err := exec.Command("fish", "--no-config", "-c", "source "+script+"; complete -C 'tool '").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "gate\tthe gate") {
		t.Errorf("fish descriptions: %v %q", err, out)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("fish ran a command from a completion value")
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
