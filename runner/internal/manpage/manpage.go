// Package manpage renders the man pages of the daemons (terok-gate,
// terok-credential-proxy, terok-ssh-agent, terok-shield-hook) at build
// time from what each binary prints for -h: the usage lines its author
// wrote and Go's flag.PrintDefaults listing of its flag definitions, so
// the page cannot drift from the flags (docs/install.md, Generated files).
package manpage

import (
	"bufio"
	"bytes"
	"fmt"
	"regexp"
	"strings"
)

// Help is a daemon's -h output, split up.
type Help struct {
	// Synopsis are the usage lines without "usage: ".
	Synopsis []string
	// Description is the text between the usage lines and the flags.
	Description []string
	// Flags in the order printed (flag.PrintDefaults sorts by name).
	Flags []Flag
}

// Flag is one entry of flag.PrintDefaults.
type Flag struct {
	Name string
	// Arg is the value placeholder ("string", "duration", or the
	// back-quoted name of the usage); "" for a boolean.
	Arg   string
	Usage string
}

// flagLine is "  -name" or "  -name arg" (flag.PrintDefaults); a one-letter
// boolean flag has its usage on the same line after a tab.
var (
	flagLine  = regexp.MustCompile(`^  -([A-Za-z0-9][A-Za-z0-9_.-]*)(?: ([^\t]+))?(?:\t(.*))?$`)
	usageLine = regexp.MustCompile(`^    \t(.*)$`)
)

// Parse splits -h output. A line that is neither usage, description, flag
// nor flag usage once the flags began is an error: a format this parser
// does not know must fail the build rather than lose text.
func Parse(out []byte) (Help, error) {
	var h Help
	sc := bufio.NewScanner(bytes.NewReader(out))
	inUsage, inFlags := false, false
	n := 0
	for sc.Scan() {
		n++
		l := strings.TrimRight(sc.Text(), " ")
		switch {
		case strings.HasPrefix(l, "usage: "):
			h.Synopsis = append(h.Synopsis, strings.TrimPrefix(l, "usage: "))
			inUsage = true
		case inUsage && strings.HasPrefix(l, "       ") && strings.TrimSpace(l) != "":
			h.Synopsis = append(h.Synopsis, strings.TrimSpace(l))
		case flagLine.MatchString(l):
			m := flagLine.FindStringSubmatch(l)
			h.Flags = append(h.Flags, Flag{Name: m[1], Arg: m[2], Usage: m[3]})
			inUsage, inFlags = false, true
		case inFlags && usageLine.MatchString(l):
			f := &h.Flags[len(h.Flags)-1]
			f.Usage = strings.TrimSpace(f.Usage + " " + usageLine.FindStringSubmatch(l)[1])
		case inFlags && l == "":
		case inFlags:
			return Help{}, fmt.Errorf("line %d: %q is not part of a flag listing", n, l)
		default:
			inUsage = false
			h.Description = append(h.Description, l)
		}
	}
	if err := sc.Err(); err != nil {
		return Help{}, err
	}
	// The listing's own title ("flags:") and blank edges are no description.
	d := h.Description
	for len(d) > 0 && (strings.TrimSpace(d[len(d)-1]) == "" || strings.HasSuffix(d[len(d)-1], ":")) {
		d = d[:len(d)-1]
	}
	for len(d) > 0 && strings.TrimSpace(d[0]) == "" {
		d = d[1:]
	}
	h.Description = d
	if len(h.Synopsis) == 0 {
		return Help{}, fmt.Errorf("no usage line")
	}
	return h, nil
}

// Page is one man page.
type Page struct {
	Name    string
	Section string
	// Summary is the NAME line's text after the dash.
	Summary string
	// Version goes into the footer ("terok-sandbox VERSION").
	Version string
	Help    Help
	// Extra are further sections: a title and its help (e.g. the SSH
	// agent's bridge subcommand), options listed like the main ones.
	Extra []Section
	// Text sections after OPTIONS, each title and paragraphs.
	Notes []Note
	// SeeAlso are "name(section)" references.
	SeeAlso []string
}

// Section is a titled usage + options block.
type Section struct {
	Title string
	Help  Help
}

// Note is a titled text section.
type Note struct {
	Title      string
	Paragraphs []string
}

// Roff renders p as a man(7) page.
func (p Page) Roff() string {
	var b strings.Builder
	fmt.Fprintf(&b, ".TH %s %s \"\" %s \"terok-sandbox\"\n", quote(strings.ToUpper(p.Name)), p.Section, quote("terok-sandbox "+p.Version))
	fmt.Fprintf(&b, ".SH NAME\n%s \\- %s\n", esc(p.Name), esc(p.Summary))
	b.WriteString(".SH SYNOPSIS\n")
	synopsis(&b, p.Help)
	if len(p.Help.Description) > 0 {
		b.WriteString(".SH DESCRIPTION\n")
		paragraphs(&b, p.Help.Description)
	}
	if len(p.Help.Flags) > 0 {
		b.WriteString(".SH OPTIONS\n")
		options(&b, p.Help.Flags)
	}
	for _, s := range p.Extra {
		fmt.Fprintf(&b, ".SH %s\n", quote(strings.ToUpper(s.Title)))
		synopsis(&b, s.Help)
		b.WriteString(".PP\n")
		paragraphs(&b, s.Help.Description)
		options(&b, s.Help.Flags)
	}
	for _, n := range p.Notes {
		fmt.Fprintf(&b, ".SH %s\n", quote(strings.ToUpper(n.Title)))
		for i, para := range n.Paragraphs {
			if i > 0 {
				b.WriteString(".PP\n")
			}
			b.WriteString(line(para) + "\n")
		}
	}
	if len(p.SeeAlso) > 0 {
		b.WriteString(".SH SEE ALSO\n")
		var refs []string
		for _, r := range p.SeeAlso {
			name, sec, ok := strings.Cut(strings.TrimSuffix(r, ")"), "(")
			if ok {
				refs = append(refs, fmt.Sprintf(".BR %s (%s)", esc(name), sec))
			} else {
				refs = append(refs, line(r))
			}
		}
		for i, r := range refs {
			if i < len(refs)-1 && strings.HasPrefix(r, ".BR") {
				r += " ,"
			}
			b.WriteString(r + "\n")
		}
	}
	return b.String()
}

func synopsis(b *strings.Builder, h Help) {
	b.WriteString(".nf\n")
	for _, s := range h.Synopsis {
		b.WriteString(line(s) + "\n")
	}
	b.WriteString(".fi\n")
}

// paragraphs joins the description's lines, a blank line starting a new
// paragraph.
func paragraphs(b *strings.Builder, lines []string) {
	var cur []string
	flush := func(last bool) {
		if len(cur) > 0 {
			b.WriteString(line(strings.Join(cur, " ")) + "\n")
			if !last {
				b.WriteString(".PP\n")
			}
		}
		cur = nil
	}
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			flush(false)
			continue
		}
		cur = append(cur, strings.TrimSpace(l))
	}
	flush(true)
}

func options(b *strings.Builder, flags []Flag) {
	for _, f := range flags {
		b.WriteString(".TP\n")
		head := `\fB\-\-` + esc(f.Name) + `\fR`
		if f.Arg != "" {
			head += ` \fI` + esc(f.Arg) + `\fR`
		}
		b.WriteString(head + "\n")
		b.WriteString(line(f.Usage) + "\n")
	}
}

// esc escapes text for roff: backslashes, and hyphens that must stay
// hyphens (option names, paths) are written as \-.
func esc(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	return strings.ReplaceAll(s, "-", `\-`)
}

// line is one text line: escaped, and protected when it would start with
// a control character.
func line(s string) string {
	s = esc(s)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

// quote is a macro argument in double quotes.
func quote(s string) string {
	return `"` + strings.ReplaceAll(esc(s), `"`, `\(dq`) + `"`
}
