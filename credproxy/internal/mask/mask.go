// Package mask hides path segments in the credential proxy's audit records:
// a route's routes.json member `mask` lists path patterns whose `{}`
// segments are recorded as `{}` instead of their value
// (docs/credential-proxy.md, "Audit records").
package mask

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"terok.dev/sandbox/common/scope"
)

// Placeholder is the segment that matches any one segment and hides it.
const Placeholder = "{}"

// Masks is one route's compiled patterns; the zero Masks records every
// path unchanged.
type Masks struct{ pats [][]string }

// New compiles patterns: each starts with `/`; a segment is `{}` (one
// segment, hidden), `*` (one segment, kept), `**` (any number of segments,
// kept; last only) or a literal.
func New(patterns []string) (Masks, error) {
	var m Masks
	for i, p := range patterns {
		segs, err := compile(p)
		if err != nil {
			return Masks{}, fmt.Errorf("mask[%d] %q: %w (example: \"/v1/files/{}/content\")", i, p, err)
		}
		m.pats = append(m.pats, segs)
	}
	return m, nil
}

func compile(p string) ([]string, error) {
	if !strings.HasPrefix(p, "/") {
		return nil, errors.New("must start with /")
	}
	segs := strings.Split(strings.Trim(p, "/"), "/")
	hides := false
	for i, s := range segs {
		switch {
		case s == Placeholder:
			hides = true
		case s == "*":
		case s == "**":
			if i != len(segs)-1 {
				return nil, errors.New("** only as the last segment")
			}
		case s == "":
			return nil, errors.New("empty segment")
		case s == "." || s == ".." || strings.ContainsAny(s, "{}*%;\\\x00"):
			return nil, fmt.Errorf("malformed segment %q", s)
		}
	}
	if !hides {
		return nil, errors.New("no {} segment to hide")
	}
	return segs, nil
}

// Empty reports whether no pattern is set.
func (m Masks) Empty() bool { return len(m.pats) == 0 }

// Path is what an audit record holds for the request's escaped path (query
// already dropped): with patterns set, the cleaned path with the first
// matching pattern's `{}` segments hidden. A path that cannot be cleaned
// (see scope.Clean) is recorded as "{}" on a masked route: it might hold
// what the operator wanted hidden.
func (m Masks) Path(escaped string) string {
	if len(m.pats) == 0 {
		return escaped
	}
	segs, err := scope.Clean(escaped)
	if err != nil {
		return Placeholder
	}
	for _, pat := range m.pats {
		if out, ok := apply(pat, segs); ok {
			return out
		}
	}
	return escaped
}

func apply(pat, segs []string) (string, bool) {
	var b strings.Builder
	for i, p := range pat {
		if p == "**" {
			for _, s := range segs[i:] {
				b.WriteByte('/')
				b.WriteString(url.PathEscape(s))
			}
			return b.String(), true
		}
		if i >= len(segs) {
			return "", false
		}
		switch p {
		case Placeholder:
			b.WriteString("/" + Placeholder)
		case "*":
			b.WriteByte('/')
			b.WriteString(url.PathEscape(segs[i]))
		default:
			if p != segs[i] {
				return "", false
			}
			b.WriteByte('/')
			b.WriteString(url.PathEscape(segs[i]))
		}
	}
	if len(segs) != len(pat) {
		return "", false
	}
	return b.String(), true
}
