//go:build !urfave_cli_no_docs

// Package installfiles renders, at build time, the files an installation
// carries besides the binaries (docs/install.md): the man page and the
// bash/zsh/fish completions from the command definitions, the user and
// system systemd units from the same templates the runner installs, and the
// example configuration. cmd/terok-sandbox-gen writes them; `make install`
// and the package copy them into place. It needs urfave/cli's docs
// generator, so it is left out of builds tagged urfave_cli_no_docs.
package installfiles

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	ucli "github.com/urfave/cli/v2"
	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/runner/internal/cli"
	"terok.dev/sandbox/runner/internal/completion"
	"terok.dev/sandbox/runner/internal/daemonctl"
)

// ExampleConfig is the annotated example config.toml; its values are the
// defaults (a test holds it to that).
//
//go:embed config.example.toml
var ExampleConfig []byte

// Output file names below the output directory.
const (
	ManPage       = "man/terok-sandbox.1"
	BashScript    = "completions/terok-sandbox.bash"
	ZshScript     = "completions/_terok-sandbox"
	FishScript    = "completions/terok-sandbox.fish"
	UserUnitDir   = "units/user"
	SystemUnitDir = "units/system"
	ExampleFile   = "config.example.toml"
)

// Options say where the installation puts the executables the units run.
type Options struct {
	// BinDir holds the daemons (e.g. /usr/bin).
	BinDir string
	// BuiltDir, when set, holds the built daemons (a `make build` tree)
	// whose -h output becomes their man pages (man/<daemon>.8).
	BuiltDir string
}

// Write renders every file into out (created as needed).
func Write(out string, o Options) error {
	if !filepath.IsAbs(o.BinDir) {
		return fmt.Errorf("bin directory must be absolute: %q", o.BinDir)
	}
	files, err := Render(o)
	if err != nil {
		return err
	}
	for name, data := range files {
		p := filepath.Join(out, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("create %s: %w", filepath.Dir(p), err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
	}
	return nil
}

// Render returns every file by its name below the output directory.
func Render(o Options) (map[string][]byte, error) {
	app := cli.NewApp(cli.Deps{})
	files := map[string][]byte{ExampleFile: ExampleConfig}
	// The man page escapes the help texts in its own copy of the tree.
	man, err := manPage(cli.NewApp(cli.Deps{}))
	if err != nil {
		return nil, fmt.Errorf("man page: %w", err)
	}
	files[ManPage] = []byte(man)
	tree := completion.Tree(app)
	var b bytes.Buffer
	if err := completion.Fish(&b, cli.Program, tree); err != nil {
		return nil, fmt.Errorf("fish completion: %w", err)
	}
	files[FishScript] = append([]byte(nil), b.Bytes()...)
	b.Reset()
	if err := completion.Bash(&b, cli.Program, tree); err != nil {
		return nil, fmt.Errorf("bash completion: %w", err)
	}
	files[BashScript] = append([]byte(nil), b.Bytes()...)
	b.Reset()
	if err := completion.Zsh(&b, cli.Program, tree); err != nil {
		return nil, fmt.Errorf("zsh completion: %w", err)
	}
	files[ZshScript] = append([]byte(nil), b.Bytes()...)
	if o.BuiltDir != "" {
		pages, err := DaemonManPages(o.BuiltDir)
		if err != nil {
			return nil, fmt.Errorf("daemon man pages: %w", err)
		}
		for name, data := range pages {
			files[name] = data
		}
	}
	// User scope first, then system: a slice, not a map, so a bin directory
	// both scopes refuse is reported under the same one every time.
	for _, sc := range []struct {
		dir string
		cfg config.Config
	}{{UserUnitDir, UserScope()}, {SystemUnitDir, SystemScope()}} {
		units, err := Units(sc.cfg, o.BinDir)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", sc.dir, err)
		}
		for _, u := range units {
			files[filepath.Join(sc.dir, u.Name)] = []byte(u.Content)
		}
	}
	return files, nil
}

// UserScope is the default configuration of any user, written with systemd
// specifiers so one unit file serves every user: %h is the home directory,
// %t $XDG_RUNTIME_DIR (docs/config.md, Base directories: the roots without overrides).
func UserScope() config.Config {
	c := config.Defaults(config.Env{EUID: 1000, Home: "/"})
	c.StateDir = "%h/.local/share/terok/sandbox"
	c.RuntimeDir = "%t/terok/sandbox"
	c.CredentialsDir = "%h/.local/share/terok/credentials"
	return c
}

// SystemScope is root's default configuration (docs/config.md, Base directories).
func SystemScope() config.Config {
	return config.Defaults(config.Env{EUID: 0, Home: "/root"})
}

// Units renders the socket and service units of the gate, the credential
// proxy and the standalone SSH agent for cfg, the daemons in binDir.
func Units(cfg config.Config, binDir string) ([]daemonctl.Unit, error) {
	if strings.ContainsAny(binDir, " \t\n") {
		return nil, errors.New("bin directory must not contain whitespace")
	}
	var units []daemonctl.Unit
	for _, d := range []daemonctl.Daemon{daemonctl.Gate(), daemonctl.Proxy(), daemonctl.Agent()} {
		u, err := d.RenderUnits(cfg, filepath.Join(binDir, d.Binary), d.Port(cfg))
		if err != nil {
			return nil, err
		}
		units = append(units, u...)
	}
	return units, nil
}

// manPage renders app's man page (section 1). urfave/cli goes through
// Markdown, where "<config root>" would be taken for an HTML tag and
// dropped, so every help text is escaped first (app is the generator's own
// copy of the tree).
func manPage(app *ucli.App) (string, error) {
	esc := strings.NewReplacer(`\`, `\\`, "<", `\<`, ">", `\>`, "*", `\*`, "_", `\_`, "`", "\\`")
	flags := func(fs []ucli.Flag) {
		for _, f := range fs {
			v := reflect.ValueOf(f)
			if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
				continue
			}
			if u := v.Elem().FieldByName("Usage"); u.IsValid() && u.Kind() == reflect.String && u.CanSet() {
				u.SetString(esc.Replace(u.String()))
			}
		}
	}
	var cmds func([]*ucli.Command)
	cmds = func(cs []*ucli.Command) {
		for _, c := range cs {
			c.Usage, c.Description, c.ArgsUsage, c.UsageText = esc.Replace(c.Usage), esc.Replace(c.Description), esc.Replace(c.ArgsUsage), esc.Replace(c.UsageText)
			flags(c.Flags)
			cmds(c.Subcommands)
		}
	}
	app.Usage, app.Description = esc.Replace(app.Usage), esc.Replace(app.Description)
	flags(app.Flags)
	cmds(app.Commands)
	return app.ToManWithSection(1)
}
