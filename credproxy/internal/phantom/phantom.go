// Package phantom extracts the phantom token a client presents
// (docs/credential-proxy.md, Design) and knows which headers carry one, so the
// proxy can strip all of them before forwarding.
package phantom

import (
	"net/http"
	"strings"
)

// Headers returns the headers that carry a phantom token, in lookup order.
// Every one of them is removed from a forwarded request.
func Headers() [3]string { return [3]string{"Authorization", "X-Api-Key", "Private-Token"} }

// Extract returns the token of the first of Headers that is present and
// non-empty. When the value contains whitespace the token is what follows
// the first run of whitespace ("Bearer x", "token x"); otherwise the whole
// value. ok is false when no header carries a value.
func Extract(h http.Header) (tok string, ok bool) {
	for _, name := range Headers() {
		v := first(h, name)
		if v == "" {
			continue
		}
		return FromValue(v), true
	}
	return "", false
}

// FromValue applies the scheme-stripping rule to one header value.
func FromValue(v string) string {
	i := strings.IndexAny(v, " \t")
	if i < 0 {
		return v
	}
	rest := v[i:]
	return strings.TrimLeft(rest, " \t")
}

// first returns the first value of name, matching the name
// case-insensitively even in a header map that was not canonicalised. Of
// several other spellings the first by name wins, as in inject's lookup,
// not the first in map order (which would pick a different token at random).
func first(h http.Header, name string) string {
	if vs := h[name]; len(vs) > 0 {
		return vs[0]
	}
	best, found := "", false
	for k, vs := range h {
		if len(vs) > 0 && strings.EqualFold(k, name) && (!found || k < best) {
			best, found = k, true
		}
	}
	if !found {
		return ""
	}
	return h[best][0]
}
