// Package completion renders static bash and zsh completion scripts from
// the terok-sandbox command tree at build time (docs/install.md,
// Generated files). Static scripts need no hidden completion flag in the product
// binary (it is built without urfave/cli's completion and docs support) and
// cost no process start per TAB; fish's script comes from urfave/cli's own
// generator.
package completion

import (
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"

	ucli "github.com/urfave/cli/v2"
)

// Node is one command path's completion words.
type Node struct {
	// Path is the space-joined command names below the program ("" for the
	// program itself, "gate sync" for a leaf).
	Path string
	// Subcommands are the names and aliases of the visible subcommands.
	Subcommands []string
	// Flags are the spellings of the visible flags, "--name" and "-n".
	Flags []string
	// ValueFlags are the spellings of the flags that take a value (the
	// next word, unless written --name=value).
	ValueFlags []string
}

// Tree flattens app into one Node per command path, parents first.
func Tree(app *ucli.App) []Node {
	var out []Node
	out = append(out, Node{Path: "", Subcommands: names(app.Commands), Flags: flagWords(app.Flags, true), ValueFlags: valueFlags(app.Flags)})
	var walk func(prefix string, cmds []*ucli.Command)
	walk = func(prefix string, cmds []*ucli.Command) {
		for _, c := range cmds {
			if c.Hidden {
				continue
			}
			// An alias is a command path of its own: `g status` completes
			// like `gate status`.
			for _, n := range append([]string{c.Name}, c.Aliases...) {
				p := strings.TrimSpace(prefix + " " + n)
				out = append(out, Node{Path: p, Subcommands: names(c.Subcommands), Flags: flagWords(c.Flags, false), ValueFlags: valueFlags(c.Flags)})
				walk(p, c.Subcommands)
			}
		}
	}
	walk("", app.Commands)
	return out
}

func names(cmds []*ucli.Command) []string {
	var out []string
	for _, c := range cmds {
		if c.Hidden {
			continue
		}
		out = append(out, c.Name)
		out = append(out, c.Aliases...)
	}
	return out
}

// flagWords are the spellings of flags plus --help (every command has it)
// and --version at the top level.
func flagWords(flags []ucli.Flag, top bool) []string {
	var out []string
	for _, f := range flags {
		if vf, ok := f.(ucli.VisibleFlag); ok && !vf.IsVisible() {
			continue
		}
		for _, n := range f.Names() {
			if len(n) == 1 {
				out = append(out, "-"+n)
			} else {
				out = append(out, "--"+n)
			}
		}
	}
	out = append(out, "--help")
	if top {
		out = append(out, "--version")
	}
	sort.Strings(out)
	return out
}

// valueFlags are the spellings of the flags that take a value.
func valueFlags(flags []ucli.Flag) []string {
	var out []string
	for _, f := range flags {
		if tv, ok := f.(interface{ TakesValue() bool }); !ok || !tv.TakesValue() {
			continue
		}
		for _, n := range f.Names() {
			if len(n) == 1 {
				out = append(out, "-"+n)
			} else {
				out = append(out, "--"+n)
			}
		}
	}
	sort.Strings(out)
	return out
}

// word is what a command or flag name may be for the scripts to embed it
// unquoted: anything else would be a definition bug, refused at build time.
var word = regexp.MustCompile(`^-{0,2}[A-Za-z0-9][A-Za-z0-9_.-]*$`)

func check(nodes []Node) error {
	for _, n := range nodes {
		for _, w := range append(append(append([]string(nil), n.Subcommands...), n.Flags...), n.ValueFlags...) {
			if !word.MatchString(w) {
				return fmt.Errorf("command %q: %q cannot be completed safely", n.Path, w)
			}
		}
		for _, part := range strings.Fields(n.Path) {
			if !word.MatchString(part) {
				return fmt.Errorf("command path %q cannot be completed safely", n.Path)
			}
		}
	}
	return nil
}

// fnName turns the program name into a shell function name.
func fnName(prog string) string {
	return "_" + strings.NewReplacer("-", "_", ".", "_").Replace(prog)
}

// Bash writes the bash completion script for prog.
func Bash(w io.Writer, prog string, nodes []Node) error {
	if err := check(nodes); err != nil {
		return err
	}
	fn := fnName(prog)
	var b strings.Builder
	fmt.Fprintf(&b, "# bash completion for %s (generated from its command definitions by terok-sandbox-gen; do not edit)\n\n", prog)
	fmt.Fprintf(&b, "%s_words() {\n\tcase \"$1\" in\n", fn)
	for _, n := range nodes {
		fmt.Fprintf(&b, "\t%q) subs=%q flags=%q vals=%q ;;\n", n.Path, strings.Join(n.Subcommands, " "), strings.Join(n.Flags, " "), strings.Join(n.ValueFlags, " "))
	}
	b.WriteString("\t*) subs='' flags='--help' vals='' ;;\n\tesac\n}\n\n")
	fmt.Fprintf(&b, `%[1]s() {
	local cur=${COMP_WORDS[COMP_CWORD]} cmd='' w i subs flags vals
	# Descend through the command names typed so far; flags (and the value
	# of one that takes a value) are skipped and the first word that is not
	# a subcommand is a positional argument.
	for ((i = 1; i < COMP_CWORD; i++)); do
		w=${COMP_WORDS[i]}
		%[1]s_words "$cmd"
		case $w in
		-*=*) continue ;;
		-*)
			case " $vals " in *" $w "*) ((i++)) ;; esac
			continue
			;;
		esac
		case " $subs " in
		*" $w "*) cmd=${cmd:+$cmd }$w ;;
		*) break ;;
		esac
	done
	%[1]s_words "$cmd"
	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$flags" -- "$cur"))
	elif [[ -n $subs && $i -eq $COMP_CWORD ]]; then
		COMPREPLY=($(compgen -W "$subs" -- "$cur"))
	else
		COMPREPLY=()
	fi
}
complete -o default -F %[1]s %[2]s
`, fn, prog)
	_, err := io.WriteString(w, b.String())
	return err
}

// Zsh writes the zsh completion script (an autoloaded #compdef file) for prog.
func Zsh(w io.Writer, prog string, nodes []Node) error {
	if err := check(nodes); err != nil {
		return err
	}
	fn := fnName(prog)
	var b strings.Builder
	fmt.Fprintf(&b, "#compdef %s\n# zsh completion for %s (generated from its command definitions by terok-sandbox-gen; do not edit)\n\n", prog, prog)
	fmt.Fprintf(&b, "%s_words() {\n\tcase \"$1\" in\n", fn)
	for _, n := range nodes {
		fmt.Fprintf(&b, "\t%q) subs=(%s) flags=(%s) vals=(%s) ;;\n", n.Path, strings.Join(n.Subcommands, " "), strings.Join(n.Flags, " "), strings.Join(n.ValueFlags, " "))
	}
	b.WriteString("\t*) subs=() flags=(--help) vals=() ;;\n\tesac\n}\n\n")
	// zsh's $path is tied to $PATH: the command path is $cmd.
	fmt.Fprintf(&b, `%[1]s() {
	local cmd='' w i
	local -a subs flags vals
	for ((i = 2; i < CURRENT; i++)); do
		w=${words[i]}
		%[1]s_words "$cmd"
		[[ $w == -*=* ]] && continue
		if [[ $w == -* ]]; then
			(( ${vals[(Ie)$w]} )) && (( i++ ))
			continue
		fi
		if (( ${subs[(Ie)$w]} )); then
			cmd=${cmd:+$cmd }$w
		else
			break
		fi
	done
	%[1]s_words "$cmd"
	if [[ ${words[CURRENT]} == -* ]]; then
		compadd -- $flags
	elif (( $#subs && i == CURRENT )); then
		compadd -- $subs
	else
		_files
	fi
}

%[1]s "$@"
`, fn)
	_, err := io.WriteString(w, b.String())
	return err
}
