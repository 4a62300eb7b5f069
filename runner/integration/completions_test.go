//go:build !urfave_cli_no_docs

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"terok.dev/sandbox/runner/internal/cli"
	"terok.dev/sandbox/runner/internal/installfiles"
)

// The generated scripts complete real names through the real binary's
// __complete in real bash, zsh and fish: projects (a gate mirror made by
// git, an SSH key directory), a user shield profile next to the bundled
// ones, and a credential stored through the CLI.
func TestCompletionsOfRealNames(t *testing.T) {
	files, err := installfiles.Render(installfiles.Options{BinDir: "/usr/bin"})
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	bin := filepath.Join(base, "bin")
	if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, cli.Program), "terok.dev/sandbox/runner/cmd/terok-sandbox").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	env := append(os.Environ(),
		"PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"TEROK_SANDBOX_STATE_DIR="+filepath.Join(base, "state"),
		"TEROK_SANDBOX_RUNTIME_DIR="+filepath.Join(base, "run"),
		"TEROK_SANDBOX_CONFIG_DIR="+filepath.Join(base, "cfg"),
		"TEROK_CREDENTIALS_DIR="+filepath.Join(base, "cred"),
		"TEROK_CONFIG_DIR="+filepath.Join(base, "umbrella"),
		"XDG_STATE_HOME="+filepath.Join(base, "xdgstate"),
		"HOME="+filepath.Join(base, "home"),
	)
	for _, d := range []string{"state/ssh-keys/beta", "cfg", "umbrella/shield/profiles", "home"} {
		if err := os.MkdirAll(filepath.Join(base, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	mustWrite := func(p, data string) {
		if err := os.WriteFile(filepath.Join(base, p), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	mustWrite("cfg/config.toml", "credentials_encryption = false\n")
	mustWrite("umbrella/shield/profiles/mine.txt", "example.org\n")
	run := func(stdin string, name string, args ...string) {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env, cmd.Stdin = env, strings.NewReader(stdin)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %q: %v\n%s", name, args, err, out)
		}
	}
	run("", "git", "init", "-q", "--bare", filepath.Join(base, "state/gate/alpha.git"))
	run("s3cret\n", filepath.Join(bin, cli.Program), "credentials", "set", "claude")
	dir := t.TempDir()
	for _, f := range []string{installfiles.BashScript, installfiles.ZshScript, installfiles.FishScript} {
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), files[f], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		line []string
		want []string
	}{
		{[]string{"gate", "sync", ""}, []string{"alpha", "beta"}},
		{[]string{"gate", "token", "revoke", "b"}, []string{"beta"}},
		{[]string{"ps", "--project", ""}, []string{"alpha", "beta"}},
		{[]string{"shield", "entries", "base", ""}, []string{"base", "dev-node", "dev-python", "dev-standard", "mine", "nvidia-hpc"}},
		{[]string{"shield", "entries", "m"}, []string{"mine"}},
		{[]string{"credentials", "get", ""}, []string{"claude"}},
		{[]string{"credentials", "delete", "--set", "default", "c"}, []string{"claude"}},
	} {
		words := append([]string{cli.Program}, tt.line...)
		name := strings.Join(tt.line, "_")
		quoted := ""
		for _, w := range words {
			quoted += " '" + w + "'"
		}
		shells := map[string]*exec.Cmd{
			"bash": exec.Command("bash", "--norc", "--noprofile", "-c", ". "+filepath.Join(dir, "terok-sandbox.bash")+
				"\nCOMP_WORDS=("+quoted+")\nCOMP_CWORD="+fmt.Sprint(len(words)-1)+"\n_terok_sandbox\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n"),
			"zsh": exec.Command("zsh", "-f", "-c", "compadd() { shift; local w; for w in \"$@\"; do [[ $w == ${words[CURRENT]}* ]] && print -r -- $w; done; return 0; }\n"+
				"_files() { print -r -- FILES; }\nwords=("+quoted+")\nCURRENT="+fmt.Sprint(len(words))+"\n. "+filepath.Join(dir, "_terok-sandbox")+"\n"),
			"fish": exec.Command("fish", "--no-config", "-c", "source "+filepath.Join(dir, "terok-sandbox.fish")+"; complete -C '"+strings.Join(words, " ")+"'"),
		}
		for sh, cmd := range shells {
			t.Run(sh+"/"+name, func(t *testing.T) {
				if _, err := exec.LookPath(sh); err != nil {
					t.Skip(sh + " not installed")
				}
				cmd.Env = env
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("%v\n%s", err, out)
				}
				var got []string
				for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
					if w, _, _ := strings.Cut(l, "\t"); w != "" {
						got = append(got, w)
					}
				}
				sort.Strings(got)
				if !reflect.DeepEqual(got, tt.want) {
					t.Fatalf("got %q want %q", got, tt.want)
				}
			})
		}
	}
}
