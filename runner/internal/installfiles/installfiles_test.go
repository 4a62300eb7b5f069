//go:build !urfave_cli_no_docs

package installfiles

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	ucli "github.com/urfave/cli/v2"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/runner/internal/cli"
	"terok.dev/sandbox/runner/internal/completion"
)

// The example's values are the defaults, and its commented-out keys are
// valid too once uncommented.
func TestExampleConfig(t *testing.T) {
	env := config.Env{EUID: 1000, Home: "/home/u", Getenv: func(string) string { return "" }}
	dir := t.TempDir()
	p := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(p, ExampleConfig, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := config.Load(env, p)
	if err != nil {
		t.Fatal(err)
	}
	want := config.Defaults(env)
	got.Source, want.Source = "", ""
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("the example is not the defaults:\n got %+v\nwant %+v", got, want)
	}
	keyLine := regexp.MustCompile(`(?m)^# ([a-z_]+ = .*)$`)
	uncommented := keyLine.ReplaceAll(ExampleConfig, []byte("$1"))
	if n := len(keyLine.FindAll(ExampleConfig, -1)); n != 5 {
		t.Fatalf("%d commented keys, want 5 (three roots, shield_upstream_dns, shield_decide_timeout)", n)
	}
	if err := os.WriteFile(p, uncommented, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(env, p); err != nil {
		t.Fatalf("uncommented example: %v", err)
	}
	// Every key config.toml accepts, as the loader's own refusal of an
	// unknown key lists them, is shown.
	if err := os.WriteFile(p, []byte("terok_example_probe = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = config.Load(env, p)
	_, list, ok := strings.Cut(fmt.Sprint(err), "valid keys are ")
	if !ok {
		t.Fatalf("the unknown-key error no longer lists the keys: %v", err)
	}
	for _, key := range strings.Split(list, ", ") {
		if !regexp.MustCompile(`(?m)^(# )?` + regexp.QuoteMeta(key) + ` = `).Match(ExampleConfig) {
			t.Errorf("the example does not show %s", key)
		}
	}
}

// The user scope is the default configuration of a user with the home
// directory and the runtime directory as systemd specifiers.
func TestUserScopeIsTheDefault(t *testing.T) {
	env := config.Env{EUID: 1000, Home: "/home/u", Getenv: func(k string) string {
		if k == "XDG_RUNTIME_DIR" {
			return "/run/user/1000"
		}
		return ""
	}}
	want := config.Defaults(env)
	got := UserScope()
	r := strings.NewReplacer("%h", "/home/u", "%t", "/run/user/1000")
	for _, p := range []struct{ name, got, want string }{
		{"state", r.Replace(got.StateDir), want.StateDir},
		{"runtime", r.Replace(got.RuntimeDir), want.RuntimeDir},
		{"credentials", r.Replace(got.CredentialsDir), want.CredentialsDir},
	} {
		if p.got != p.want {
			t.Errorf("%s: %s, want %s", p.name, p.got, p.want)
		}
	}
	if got.GatePort != want.GatePort || got.ProxyPort != want.ProxyPort || got.SSHAgentPort != want.SSHAgentPort {
		t.Error("ports differ from the defaults")
	}
	if s := SystemScope(); s.StateDir != "/var/lib/terok/sandbox" || s.RuntimeDir != "/run/terok/sandbox" {
		t.Errorf("system scope %+v", s)
	}
}

func TestWrite(t *testing.T) {
	out := t.TempDir()
	bin := t.TempDir()
	for _, d := range []string{"terok-gate", "terok-credential-proxy", "terok-ssh-agent"} {
		if err := os.WriteFile(filepath.Join(bin, d), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := Write(out, Options{BinDir: "relative"}); err == nil {
		t.Fatal("relative bin directory accepted")
	}
	if err := Write(out, Options{BinDir: bin}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{ManPage, BashScript, ZshScript, FishScript, ExampleFile} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	man, _ := os.ReadFile(filepath.Join(out, ManPage))
	if !strings.HasPrefix(string(man), ".nh\n.TH terok-sandbox 1") || !strings.Contains(string(man), "<config root>/config.toml") {
		t.Errorf("man page:\n%.400s", man)
	}
	for _, scope := range []string{UserUnitDir, SystemUnitDir} {
		ents, err := os.ReadDir(filepath.Join(out, scope))
		if err != nil || len(ents) != 6 {
			t.Fatalf("%s: %d units, %v", scope, len(ents), err)
		}
		svc, _ := os.ReadFile(filepath.Join(out, scope, "terok-gate.service"))
		if !strings.Contains(string(svc), "ExecStart="+filepath.Join(bin, "terok-gate")+" ") {
			t.Errorf("%s gate service:\n%s", scope, svc)
		}
	}
	user, _ := os.ReadFile(filepath.Join(out, UserUnitDir, "terok-credential-proxy.socket"))
	if !strings.Contains(string(user), "ListenStream=%t/terok/sandbox/credential-proxy.sock\n") {
		t.Errorf("user proxy socket:\n%s", user)
	}
	sys, _ := os.ReadFile(filepath.Join(out, SystemUnitDir, "terok-credential-proxy.socket"))
	if !strings.Contains(string(sys), "ListenStream=/run/terok/sandbox/credential-proxy.sock\n") {
		t.Errorf("system proxy socket:\n%s", sys)
	}
	if _, err := exec.LookPath("systemd-analyze"); err == nil {
		verify(t, filepath.Join(out, SystemUnitDir), false)
		verify(t, filepath.Join(out, UserUnitDir), true)
	}
}

// verify runs systemd-analyze verify over the rendered units of one scope.
func verify(t *testing.T, dir string, user bool) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	args := []string{"verify"}
	if user {
		args = append(args, "--user")
	}
	for _, e := range ents {
		args = append(args, filepath.Join(dir, e.Name()))
	}
	cmd := exec.Command("systemd-analyze", args...)
	rt := t.TempDir()
	cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+rt)
	out, err := cmd.CombinedOutput()
	if err != nil || strings.Contains(string(out), "terok-") {
		t.Errorf("systemd-analyze %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// The generated completions offer the real tree in the real shells.
func TestCompletionsOfTheRealTree(t *testing.T) {
	files, err := Render(Options{BinDir: "/usr/bin"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, f := range []string{BashScript, FishScript} {
		p := filepath.Join(dir, filepath.Base(f))
		if err := os.WriteFile(p, files[f], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"start", "status", "stop", "sync"}
	if _, err := exec.LookPath("bash"); err == nil {
		prog := ". " + filepath.Join(dir, "terok-sandbox.bash") + "\nCOMP_WORDS=(terok-sandbox gate s)\nCOMP_CWORD=2\n_terok_sandbox\nprintf '%s\\n' \"${COMPREPLY[@]}\" | sort\n"
		out, err := exec.Command("bash", "--norc", "--noprofile", "-c", prog).CombinedOutput()
		if err != nil || strings.Fields(string(out)) == nil || !reflect.DeepEqual(strings.Fields(string(out)), want) {
			t.Errorf("bash: %v %q", err, out)
		}
	}
	if _, err := exec.LookPath("fish"); err == nil {
		cmd := exec.Command("fish", "--no-config", "-c", "source "+filepath.Join(dir, "terok-sandbox.fish")+"; complete -C 'terok-sandbox gate s'")
		out, err := cmd.CombinedOutput()
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			got = append(got, strings.SplitN(l, "\t", 2)[0])
		}
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("fish: %v %q", err, out)
		}
	}
}

// Every placeholder of every ArgsUsage in the real tree has a decided
// completion (a kind, or none): a new argument cannot silently go without.
func TestEveryArgumentHasACompletionDecision(t *testing.T) {
	var walk func(path string, cmds []*ucli.Command)
	walk = func(path string, cmds []*ucli.Command) {
		for _, c := range cmds {
			p := strings.TrimSpace(path + " " + c.Name)
			if _, _, unknown := completion.ArgKinds(c.ArgsUsage); len(unknown) > 0 {
				t.Errorf("%s: ArgsUsage %q has placeholders %q that completion.ArgKind does not know", p, c.ArgsUsage, unknown)
			}
			walk(p, c.Subcommands)
		}
	}
	walk("", cli.NewApp(cli.Deps{}).Commands)
	// The kinds land where they belong.
	byPath := map[string]completion.Node{}
	for _, n := range completion.Tree(cli.NewApp(cli.Deps{})) {
		byPath[n.Path] = n
	}
	for path, want := range map[string][]string{
		"logs": {completion.KindContainer}, "stop": {completion.KindContainer}, "shield allow": {completion.KindContainer},
		"gate sync": {completion.KindProject}, "ssh init": {completion.KindProject}, "gate token revoke": {completion.KindProject},
		"credentials get": {completion.KindCredential}, "credentials delete": {completion.KindCredential},
		"shield entries": {completion.KindProfile},
	} {
		if got := byPath[path].Args; !reflect.DeepEqual(got, want) {
			t.Errorf("%s: argument kinds %q, want %q", path, got, want)
		}
	}
	if got := byPath["ps"].FlagKinds; !reflect.DeepEqual(got, []string{"--project=" + completion.KindProject}) {
		t.Errorf("ps flag kinds %q", got)
	}
}

// The daemons' man pages, from the real binaries' -h, render with the real
// man (man -l) without a groff warning and list every flag the binary has.
func TestDaemonManPages(t *testing.T) {
	dir := t.TempDir()
	for name, pkg := range map[string]string{
		"terok-gate":             "terok.dev/sandbox/gate/cmd/terok-gate",
		"terok-credential-proxy": "terok.dev/sandbox/credproxy/cmd/terok-credential-proxy",
		"terok-ssh-agent":        "terok.dev/sandbox/sshagent/cmd/terok-ssh-agent",
		"terok-shield-hook":      "terok.dev/sandbox/shield-hook/cmd/terok-shield-hook",
	} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", name, err, out)
		}
	}
	if _, err := Render(Options{BinDir: "/usr/bin", BuiltDir: t.TempDir()}); err == nil {
		t.Fatal("rendered daemon pages without the daemons")
	}
	files, err := Render(Options{BinDir: "/usr/bin", BuiltDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	for _, d := range DaemonPages() {
		page := files["man/"+d.Name+".8"]
		if page == nil {
			t.Fatalf("no page for %s", d.Name)
		}
		p := filepath.Join(out, d.Name+".8")
		if err := os.WriteFile(p, page, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := exec.LookPath("groff"); err == nil {
			cmd := exec.Command("groff", "-man", "-Tutf8", "-ww", "-z", p)
			if msg, err := cmd.CombinedOutput(); err != nil || len(msg) > 0 {
				t.Errorf("groff %s: %v\n%s", d.Name, err, msg)
			}
		}
		if _, err := exec.LookPath("man"); err != nil {
			continue
		}
		cmd := exec.Command("man", "-l", p)
		cmd.Env = append(os.Environ(), "MANWIDTH=200", "MAN_KEEP_FORMATTING=", "MANPAGER=cat", "PAGER=cat", "LC_ALL=C.UTF-8")
		text, err := cmd.Output()
		if err != nil {
			t.Fatalf("man -l %s: %v", d.Name, err)
		}
		plain := strings.NewReplacer("\u2010", "-", "\u2212", "-").Replace(regexp.MustCompile(".\b").ReplaceAllString(string(text), ""))
		if !strings.Contains(plain, d.Name+" - "+d.Summary) {
			t.Errorf("%s: NAME line missing:\n%.300s", d.Name, plain)
		}
		help, err := exec.Command(filepath.Join(dir, d.Name), "-h").CombinedOutput()
		if err != nil {
			t.Fatalf("%s -h: %v", d.Name, err)
		}
		flags := regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`).FindAllStringSubmatch(string(help), -1)
		if d.Name != "terok-shield-hook" && len(flags) < 5 {
			t.Fatalf("%s: only %d flags in -h", d.Name, len(flags))
		}
		for _, f := range flags {
			if !strings.Contains(plain, "--"+f[1]) {
				t.Errorf("%s: page lacks --%s", d.Name, f[1])
			}
		}
	}
}

// TestRenderErrorIsStable: a bin directory the units refuse is reported
// under the user scope every time (the scopes were a map: random order).
func TestRenderErrorIsStable(t *testing.T) {
	for i := 0; i < 20; i++ {
		_, err := Render(Options{BinDir: `/usr/q"bin`})
		if err == nil || !strings.HasPrefix(err.Error(), UserUnitDir+": ") {
			t.Fatalf("run %d: Render = %v, want the %s error", i, err, UserUnitDir)
		}
	}
}
