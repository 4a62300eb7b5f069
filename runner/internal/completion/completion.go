// Package completion renders the bash, zsh and fish completion scripts of
// terok-sandbox from its command tree at build time (docs/install.md,
// Generated files). Commands and flags are static in the scripts (no
// process start per TAB); dynamic values (container, project, profile and
// credential names) come from the hidden `terok-sandbox __complete KIND`,
// started only where such a value is being completed.
package completion

import (
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"

	ucli "github.com/urfave/cli/v2"
)

// Kinds of dynamic values: the argument of `terok-sandbox __complete`.
const (
	KindContainer  = "containers"
	KindProject    = "projects"
	KindProfile    = "profiles"
	KindCredential = "credentials"
)

// Kinds lists every kind, in the order the docs give them.
func Kinds() []string { return []string{KindContainer, KindProject, KindProfile, KindCredential} }

// ArgKind is the kind of value a placeholder of a command's ArgsUsage
// stands for; known is false for a placeholder this table does not know,
// which the tests refuse, so a new argument is completed by decision.
func ArgKind(word string) (kind string, known bool) {
	switch word {
	case "NAME", "CONTAINER":
		return KindContainer, true
	case "PROJECT":
		return KindProject, true
	case "PROFILE":
		return KindProfile, true
	case "PROVIDER":
		return KindCredential, true
	case "TASK", "TARGET", "COMMAND", "ARG", "REPO_PATH", "KIND", "REF", "KEY":
		return "", true
	case "TOKEN", "PREFIX":
		// Never completed: listing tokens (or their prefixes) into a shell's
		// completion would put credentials into terminals and history.
		return "", true
	}
	return "", false
}

// flagKind is the kind of value a flag takes, by its name.
func flagKind(name string) string {
	if name == "project" {
		return KindProject
	}
	return ""
}

// ArgKinds parses an ArgsUsage ("PROJECT TASK", "NAME...", "[--] [COMMAND
// [ARG...]]", "PROJECT|REPO_PATH") into the kind of each position ("" for
// none) and whether the last one repeats. Unknown placeholders are
// returned in unknown.
func ArgKinds(usage string) (kinds []string, repeat bool, unknown []string) {
	for _, tok := range strings.Fields(usage) {
		tok = strings.Trim(tok, "[]")
		if tok == "" || tok == "--" || strings.HasPrefix(tok, "-") {
			continue
		}
		rep := strings.HasSuffix(tok, "...")
		tok = strings.TrimSuffix(tok, "...")
		kind := ""
		for _, alt := range strings.Split(tok, "|") {
			k, known := ArgKind(alt)
			if !known {
				unknown = append(unknown, alt)
			}
			if kind == "" {
				kind = k
			}
		}
		kinds = append(kinds, kind)
		repeat = rep
		if rep {
			break
		}
	}
	// Trailing positions without a kind add nothing to complete.
	for len(kinds) > 0 && kinds[len(kinds)-1] == "" {
		kinds = kinds[:len(kinds)-1]
		repeat = false
	}
	if len(kinds) == 0 {
		kinds = nil
	}
	return kinds, repeat, unknown
}

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
	// Args is the kind of each positional argument ("" for none); with
	// ArgsRepeat the last kind holds for every further one.
	Args       []string
	ArgsRepeat bool
	// FlagKinds are "--flag=kind" for the value flags with a dynamic value.
	FlagKinds []string
	// Help describes subcommands and flags (fish shows it), by word.
	Help map[string]string
}

// Tree flattens app into one Node per command path, parents first.
func Tree(app *ucli.App) []Node {
	var out []Node
	out = append(out, Node{Path: "", Subcommands: names(app.Commands), Flags: flagWords(app.Flags, true), ValueFlags: valueFlags(app.Flags),
		FlagKinds: flagKinds(app.Flags), Help: help(app.Commands, app.Flags, true)})
	var walk func(prefix string, cmds []*ucli.Command)
	walk = func(prefix string, cmds []*ucli.Command) {
		for _, c := range cmds {
			if c.Hidden {
				continue
			}
			args, rep, _ := ArgKinds(c.ArgsUsage)
			// An alias is a command path of its own: `g status` completes
			// like `gate status`.
			for _, n := range append([]string{c.Name}, c.Aliases...) {
				p := strings.TrimSpace(prefix + " " + n)
				out = append(out, Node{Path: p, Subcommands: names(c.Subcommands), Flags: flagWords(c.Flags, false), ValueFlags: valueFlags(c.Flags),
					Args: args, ArgsRepeat: rep, FlagKinds: flagKinds(c.Flags), Help: help(c.Subcommands, c.Flags, false)})
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
			out = append(out, spelling(n))
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
		if !takesValue(f) {
			continue
		}
		for _, n := range f.Names() {
			out = append(out, spelling(n))
		}
	}
	sort.Strings(out)
	return out
}

// flagKinds are "--flag=kind" for the value flags whose value is dynamic.
func flagKinds(flags []ucli.Flag) []string {
	var out []string
	for _, f := range flags {
		if !takesValue(f) {
			continue
		}
		for _, n := range f.Names() {
			if k := flagKind(f.Names()[0]); k != "" {
				out = append(out, spelling(n)+"="+k)
			}
		}
	}
	sort.Strings(out)
	return out
}

// takesValue reports whether f takes a value (--name VALUE).
func takesValue(f ucli.Flag) bool {
	tv, ok := f.(interface{ TakesValue() bool })
	return ok && tv.TakesValue()
}

// spelling is how flag name n is typed: -n for one letter, else --name.
func spelling(n string) string {
	if len(n) == 1 {
		return "-" + n
	}
	return "--" + n
}

// help maps subcommand and flag spellings to their one-line usage.
func help(cmds []*ucli.Command, flags []ucli.Flag, top bool) map[string]string {
	out := map[string]string{"--help": "show help"}
	if top {
		out["--version"] = "print the version"
	}
	for _, c := range cmds {
		if c.Hidden {
			continue
		}
		for _, n := range append([]string{c.Name}, c.Aliases...) {
			out[n] = c.Usage
		}
	}
	for _, f := range flags {
		u, ok := f.(interface{ GetUsage() string })
		if !ok {
			continue
		}
		for _, n := range f.Names() {
			out[spelling(n)] = u.GetUsage()
		}
	}
	return out
}

// word is what a command or flag name may be for the scripts to embed it
// unquoted: anything else would be a definition bug, refused at build time.
var word = regexp.MustCompile(`^-{0,2}[A-Za-z0-9][A-Za-z0-9_.-]*$`)

func check(nodes []Node) error {
	for _, n := range nodes {
		words := append(append(append([]string(nil), n.Subcommands...), n.Flags...), n.ValueFlags...)
		for _, fk := range n.FlagKinds {
			f, k, _ := strings.Cut(fk, "=")
			words = append(words, f, k)
		}
		for _, k := range n.Args {
			if k != "" {
				words = append(words, k)
			}
		}
		for _, w := range words {
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

// kindsWord is a node's Args for the scripts: "-" stands for no kind.
func kindsWord(n Node) string {
	out := make([]string, len(n.Args))
	for i, k := range n.Args {
		out[i] = k
		if k == "" {
			out[i] = "-"
		}
	}
	return strings.Join(out, " ")
}

func boolWord(b bool) string {
	if b {
		return "1"
	}
	return "0"
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
		fmt.Fprintf(&b, "\t%q) subs=%q flags=%q vals=%q args=%q rep=%s fk=%q ;;\n", n.Path, strings.Join(n.Subcommands, " "),
			strings.Join(n.Flags, " "), strings.Join(n.ValueFlags, " "), kindsWord(n), boolWord(n.ArgsRepeat), strings.Join(n.FlagKinds, " "))
	}
	b.WriteString("\t*) subs='' flags='--help' vals='' args='' rep=0 fk='' ;;\n\tesac\n}\n\n")
	b.WriteString(strings.NewReplacer("FN", fn, "PROG", prog).Replace(bashBody))
	_, err := io.WriteString(w, b.String())
	return err
}

// bashBody descends through the command names typed so far; flags (and
// the value of one that takes a value) are skipped; from the first
// positional argument (or --) on every word counts as one. Dynamic values
// are read line by line, never through compgen -W, which would expand them,
// and only plain names are kept (what `__complete` prints).
const bashBody = `FN() {
	local cur=${COMP_WORDS[COMP_CWORD]} cmd='' w i n=0 dd=0 vflag='' kind='' subs flags vals args rep fk
	local -a a
	FN_words ''
	for ((i = 1; i < COMP_CWORD; i++)); do
		w=${COMP_WORDS[i]}
		if ((dd)); then
			((n++))
			continue
		fi
		case $w in
		--)
			dd=1
			continue
			;;
		-*=*) continue ;;
		-*)
			case " $vals " in *" $w "*)
				((i + 1 == COMP_CWORD)) && vflag=$w
				((i++))
				;;
			esac
			continue
			;;
		esac
		if ((n == 0)) && [[ " $subs " == *" $w "* ]]; then
			cmd=${cmd:+$cmd }$w
			FN_words "$cmd"
		else
			((n++))
		fi
	done
	COMPREPLY=()
	if [[ -n $vflag ]]; then
		for w in $fk; do
			[[ ${w%%=*} == "$vflag" ]] && kind=${w#*=}
		done
	elif ((!dd)) && [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$flags" -- "$cur"))
		return
	elif ((n == 0 && !dd)) && [[ -n $subs ]]; then
		COMPREPLY=($(compgen -W "$subs" -- "$cur"))
		return
	else
		a=($args)
		if ((n < ${#a[@]})); then
			kind=${a[n]}
		elif ((rep && ${#a[@]})); then
			kind=${a[${#a[@]} - 1]}
		fi
	fi
	[[ $kind == - ]] && kind=''
	[[ -z $kind ]] && return
	# A name is completed from the names there are, not from files.
	compopt +o default 2>/dev/null
	while IFS= read -r w; do
		[[ $w =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ && $w == "$cur"* ]] && COMPREPLY+=("$w")
	done < <("${COMP_WORDS[0]}" __complete "$kind" 2>/dev/null)
}
complete -o default -F FN PROG
`

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
		fmt.Fprintf(&b, "\t%q) subs=(%s) flags=(%s) vals=(%s) args=(%s) rep=%s fk=(%s) ;;\n", n.Path, strings.Join(n.Subcommands, " "),
			strings.Join(n.Flags, " "), strings.Join(n.ValueFlags, " "), kindsWord(n), boolWord(n.ArgsRepeat), strings.Join(n.FlagKinds, " "))
	}
	b.WriteString("\t*) subs=() flags=(--help) vals=() args=() rep=0 fk=() ;;\n\tesac\n}\n\n")
	b.WriteString(strings.ReplaceAll(zshBody, "FN", fn))
	_, err := io.WriteString(w, b.String())
	return err
}

// zshBody is bashBody's logic in zsh ($path is tied to $PATH in zsh: the
// command path is $cmd).
const zshBody = `FN() {
	local cmd='' w i n=0 dd=0 vflag='' kind='' rep=0
	local -a subs flags vals args fk vs
	FN_words ''
	for ((i = 2; i < CURRENT; i++)); do
		w=${words[i]}
		if ((dd)); then
			((n++))
			continue
		fi
		if [[ $w == -- ]]; then
			dd=1
			continue
		fi
		[[ $w == -*=* ]] && continue
		if [[ $w == -* ]]; then
			if (( ${vals[(Ie)$w]} )); then
				(( i + 1 == CURRENT )) && vflag=$w
				(( i++ ))
			fi
			continue
		fi
		if (( n == 0 && ${subs[(Ie)$w]} )); then
			cmd=${cmd:+$cmd }$w
			FN_words "$cmd"
		else
			(( n++ ))
		fi
	done
	if [[ -n $vflag ]]; then
		for w in $fk; do
			[[ ${w%%=*} == $vflag ]] && kind=${w#*=}
		done
	elif (( !dd )) && [[ ${words[CURRENT]} == -* ]]; then
		compadd -- $flags
		return
	elif (( n == 0 && !dd && $#subs )); then
		compadd -- $subs
		return
	elif (( n < $#args )); then
		kind=${args[n+1]}
	elif (( rep && $#args )); then
		kind=${args[-1]}
	fi
	[[ $kind == - ]] && kind=''
	if [[ -z $kind ]]; then
		_files
		return
	fi
	for w in ${(f)"$(${words[1]} __complete $kind 2>/dev/null)"}; do
		[[ $w =~ '^[A-Za-z0-9][A-Za-z0-9_.-]*$' ]] && vs+=($w)
	done
	compadd -- $vs
}

FN "$@"
`

// Fish writes the fish completion script for prog: one function computes
// the candidates with bashBody's logic, subcommands and flags with their
// descriptions.
func Fish(w io.Writer, prog string, nodes []Node) error {
	if err := check(nodes); err != nil {
		return err
	}
	fn := "_" + fnName(prog)
	var b strings.Builder
	fmt.Fprintf(&b, "# fish completion for %s (generated from its command definitions by terok-sandbox-gen; do not edit)\n\n", prog)
	fmt.Fprintf(&b, "function %s_words\n\tswitch $argv[1]\n", fn)
	for _, n := range nodes {
		fmt.Fprintf(&b, "\tcase %s\n", fishQuote(n.Path))
		fmt.Fprintf(&b, "\t\tset -g %s_subs %s\n", fn, fishList(n.Subcommands, n.Help))
		fmt.Fprintf(&b, "\t\tset -g %s_flags %s\n", fn, fishList(n.Flags, n.Help))
		fmt.Fprintf(&b, "\t\tset -g %s_vals %s\n", fn, strings.Join(n.ValueFlags, " "))
		fmt.Fprintf(&b, "\t\tset -g %s_args %s\n", fn, kindsWord(n))
		fmt.Fprintf(&b, "\t\tset -g %s_rep %s\n", fn, boolWord(n.ArgsRepeat))
		fmt.Fprintf(&b, "\t\tset -g %s_fk %s\n", fn, strings.Join(n.FlagKinds, " "))
	}
	fmt.Fprintf(&b, "\tcase '*'\n\t\tset -g %[1]s_subs\n\t\tset -g %[1]s_flags --help 'show help'\n\t\tset -g %[1]s_vals\n\t\tset -g %[1]s_args\n\t\tset -g %[1]s_rep 0\n\t\tset -g %[1]s_fk\n\tend\nend\n\n", fn)
	b.WriteString(strings.NewReplacer("FN", fn, "PROG", prog).Replace(fishBody))
	_, err := io.WriteString(w, b.String())
	return err
}

// fishList is words with their descriptions, word and text alternating
// (printed as word<TAB>text), each single-quoted.
func fishList(words []string, help map[string]string) string {
	var out []string
	for _, w := range words {
		out = append(out, fishQuote(w), fishQuote(help[w]))
	}
	return strings.Join(out, " ")
}

// fishQuote single-quotes s for fish (\ and ' escaped; newlines become
// spaces, a description is one line).
func fishQuote(s string) string {
	s = strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\n", " ", "\t", " ").Replace(s)
	return "'" + s + "'"
}

const fishBody = `function FN_complete
	set -l toks (commandline -opc)
	set -l cur (commandline -ct)
	set -l cmd ''
	set -l n 0
	set -l dd 0
	set -l vflag ''
	set -l kind ''
	FN_words ''
	set -l i 2
	set -l last (count $toks)
	while test $i -le $last
		set -l w $toks[$i]
		set i (math $i + 1)
		if test $dd = 1
			set n (math $n + 1)
			continue
		end
		switch $w
			case '--'
				set dd 1
				continue
			case '-*=*'
				continue
			case '-*'
				if contains -- $w $FN_vals
					test $i -gt $last; and set vflag $w
					set i (math $i + 1)
				end
				continue
		end
		if test $n = 0; and contains -- $w $FN_subs
			set cmd (string trim -- "$cmd $w")
			FN_words $cmd
		else
			set n (math $n + 1)
		end
	end
	if test -n "$vflag"
		for f in $FN_fk
			set -l kv (string split -m 1 = -- $f)
			test "$kv[1]" = "$vflag"; and set kind $kv[2]
		end
	else if test $dd = 0; and string match -q -- '-*' "$cur"
		set -q FN_flags[1]; and printf '%s\t%s\n' $FN_flags
		return
	else if test $n = 0; and test $dd = 0; and set -q FN_subs[1]
		printf '%s\t%s\n' $FN_subs
		return
	else if test $n -lt (count $FN_args)
		set kind $FN_args[(math $n + 1)]
	else if test $FN_rep = 1; and set -q FN_args[1]
		set kind $FN_args[-1]
	end
	test "$kind" = '-'; and set kind ''
	if test -n "$kind"
		# Only plain names: __complete prints nothing else.
		$toks[1] __complete $kind 2>/dev/null | string match -r '^[A-Za-z0-9][A-Za-z0-9_.-]*$'
	else
		__fish_complete_path "$cur"
	end
end

complete -c PROG -f -a '(FN_complete)'
`
