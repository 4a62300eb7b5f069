// Package scope holds a route's allow/deny rules (docs/credential-proxy.md,
// "Scopes") and decides whether a request's method and path are inside them.
//
// Matching is done on the cleaned, decoded path:
//   - each segment is percent-decoded; a decoded "/" or "\" (an encoded
//     slash), a NUL, a ';' (path parameters, which some upstreams strip) or a
//     malformed escape makes the path unmatchable: it is refused whenever the
//     route has a scope;
//   - empty segments ("//") and "." are dropped; a ".." segment (also as
//     %2e%2e) is refused, never resolved;
//   - "*" in a pattern matches exactly one segment, "**" any number (zero
//     included); other pattern segments match literally (case-sensitive).
//
// Deny rules win over allow rules. Without allow rules every path not denied
// is allowed; without any rule the scope allows everything.
package scope

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Rule is one allow or deny entry of a route.
type Rule struct {
	// Methods are upper-case HTTP methods; "*" matches any method.
	Methods []string `json:"methods"`
	// Path is the pattern: "/" followed by segments ("*", "**" or literal).
	Path string `json:"path"`
}

// compiled is a validated rule.
type compiled struct {
	anyMethod bool
	methods   []string
	segs      []string
}

// Scope is the compiled allow/deny rules of one route. The zero Scope
// allows everything.
type Scope struct {
	allow []compiled
	deny  []compiled
}

// New validates the rules; every error names the list, the index and what
// is wrong.
func New(allow, deny []Rule) (Scope, error) {
	var s Scope
	var err error
	if s.allow, err = compileAll("allow", allow); err != nil {
		return Scope{}, err
	}
	if s.deny, err = compileAll("deny", deny); err != nil {
		return Scope{}, err
	}
	return s, nil
}

// Empty reports whether the scope has no rule (behaviour unchanged).
func (s Scope) Empty() bool { return len(s.allow) == 0 && len(s.deny) == 0 }

func compileAll(list string, rules []Rule) ([]compiled, error) {
	out := make([]compiled, 0, len(rules))
	for i, r := range rules {
		c, err := compile(r)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %w (example: {\"methods\": [\"GET\"], \"path\": \"/v1/models/**\"})", list, i, err)
		}
		out = append(out, c)
	}
	return out, nil
}

func compile(r Rule) (compiled, error) {
	var c compiled
	if len(r.Methods) == 0 {
		return c, errors.New("methods is empty")
	}
	for _, m := range r.Methods {
		if m == "*" {
			c.anyMethod = true
			continue
		}
		if !validMethod(m) {
			return c, fmt.Errorf("method %q is not an upper-case HTTP method", m)
		}
		c.methods = append(c.methods, m)
	}
	if !strings.HasPrefix(r.Path, "/") {
		return c, fmt.Errorf("path %q does not start with /", r.Path)
	}
	for _, seg := range strings.Split(r.Path[1:], "/") {
		switch {
		case seg == "":
			continue // "/" alone, or a trailing or doubled slash
		case seg == "." || seg == "..":
			return c, fmt.Errorf("path %q has a dot segment", r.Path)
		case seg != "*" && seg != "**" && strings.Contains(seg, "*"):
			return c, fmt.Errorf("path %q: '*' must be a whole segment", r.Path)
		case strings.ContainsAny(seg, ";%\\\x00"):
			return c, fmt.Errorf("path %q: segment %q has ';', '%%', '\\' or NUL", r.Path, seg)
		}
		c.segs = append(c.segs, seg)
	}
	return c, nil
}

func validMethod(m string) bool {
	if m == "" || len(m) > 32 {
		return false
	}
	for i := 0; i < len(m); i++ {
		if m[i] < 'A' || m[i] > 'Z' {
			return false
		}
	}
	return true
}

// ErrUnmatchable is returned by Clean for a path that no rule may match.
var ErrUnmatchable = errors.New("path cannot be matched against a scope")

// Clean turns an escaped request path (URL.EscapedPath) into its decoded
// segments by the rules of the package comment.
func Clean(escaped string) ([]string, error) {
	if !strings.HasPrefix(escaped, "/") {
		return nil, ErrUnmatchable
	}
	out := make([]string, 0, 8)
	for _, raw := range strings.Split(escaped[1:], "/") {
		seg, err := url.PathUnescape(raw)
		if err != nil || strings.ContainsAny(seg, "/\\;\x00") {
			return nil, ErrUnmatchable
		}
		switch seg {
		case "", ".":
		case "..":
			// Refused, not resolved: an upstream that does not resolve
			// it (or does not decode %2e%2e) would route the request by
			// its literal prefix, so /allowed/.. could reach anything.
			return nil, ErrUnmatchable
		default:
			out = append(out, seg)
		}
	}
	return out, nil
}

// Allowed reports whether method and escaped path are inside the scope.
// The method is matched case-insensitively: rules name upper-case methods,
// and many upstreams take "delete" for DELETE, so a deny rule must too.
func (s Scope) Allowed(method, escaped string) bool {
	if s.Empty() {
		return true
	}
	method = strings.ToUpper(method)
	segs, err := Clean(escaped)
	if err != nil {
		return false
	}
	for _, c := range s.deny {
		if c.match(method, segs) {
			return false
		}
	}
	if len(s.allow) == 0 {
		return true
	}
	for _, c := range s.allow {
		if c.match(method, segs) {
			return true
		}
	}
	return false
}

func (c compiled) match(method string, segs []string) bool {
	if !c.anyMethod {
		ok := false
		for _, m := range c.methods {
			if m == method {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return matchSegs(c.segs, segs)
}

// matchSegs matches pattern segments against path segments; "**" is tried
// greedily from zero segments up (bounded by len(path) per "**").
func matchSegs(pat, path []string) bool {
	for len(pat) > 0 {
		p := pat[0]
		if p == "**" {
			rest := pat[1:]
			for len(rest) > 0 && rest[0] == "**" {
				rest = rest[1:]
			}
			if len(rest) == 0 {
				return true
			}
			for i := 0; i <= len(path); i++ {
				if matchSegs(rest, path[i:]) {
					return true
				}
			}
			return false
		}
		if len(path) == 0 || (p != "*" && p != path[0]) {
			return false
		}
		pat, path = pat[1:], path[1:]
	}
	return len(path) == 0
}

// ParseRule reads the command-line form of a rule, "METHODS PATH": one or
// more methods joined by ',' ("*" for any), one space, then the pattern,
// e.g. "GET /v1/models" or "GET,POST /v1/messages/**". The rule is
// validated like a routes.json entry; errors carry an example.
func ParseRule(s string) (Rule, error) {
	const example = ` (example: 'GET /v1/models' or 'GET,POST /v1/messages/**')`
	methods, path, ok := strings.Cut(strings.TrimSpace(s), " ")
	path = strings.TrimSpace(path)
	if !ok || methods == "" || path == "" {
		return Rule{}, fmt.Errorf("rule %q is not \"METHODS PATH\"%s", s, example)
	}
	r := Rule{Methods: strings.Split(methods, ","), Path: path}
	for _, m := range r.Methods {
		if m == "" {
			return Rule{}, fmt.Errorf("rule %q has an empty method%s", s, example)
		}
	}
	if _, err := compile(r); err != nil {
		return Rule{}, fmt.Errorf("rule %q: %w%s", s, err, example)
	}
	return r, nil
}
