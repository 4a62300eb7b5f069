// Package auth parses the gate's credentials (docs/gate.md, Request handling): the token
// is the user name of HTTP Basic authentication; the password is ignored.
package auth

import (
	"encoding/base64"
	"strings"
	"unicode/utf8"
)

// MaxHeader bounds the Authorization value we decode; real tokens are 40
// characters, so anything much longer is junk.
const MaxHeader = 4096

// BasicUser returns the user name of a Basic Authorization header value.
// The scheme is matched case-insensitively; the credentials must be
// standard base64 of UTF-8 text containing a ':'; the user name must not be
// empty. Anything else is not usable (ok false → 401).
func BasicUser(header string) (user string, ok bool) {
	if header == "" || len(header) > MaxHeader {
		return "", false
	}
	scheme, rest, found := strings.Cut(header, " ")
	if !found || !strings.EqualFold(scheme, "Basic") {
		return "", false
	}
	rest = strings.TrimLeft(rest, " ")
	raw, err := base64.StdEncoding.DecodeString(strings.TrimRight(rest, " "))
	if err != nil || !utf8.Valid(raw) {
		return "", false
	}
	user, _, found = strings.Cut(string(raw), ":")
	if !found || user == "" {
		return "", false
	}
	return user, true
}
