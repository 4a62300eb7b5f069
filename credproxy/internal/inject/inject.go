// Package inject decides how a stored credential is put on an upstream
// request (docs/credential-proxy.md, Design; docs/formats.md, Credential values) and
// applies it to the outgoing headers.
package inject

import (
	"errors"
	"net/http"
	"sort"
	"strings"

	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/credproxy/internal/routes"
)

// DefaultBeta is the anthropic-beta flag sent with OAuth credentials that do
// not name their own.
const DefaultBeta = "oauth-2025-04-20"

// BetaHeader is the header that carries the OAuth beta flag.
const BetaHeader = "Anthropic-Beta"

// ErrMisconfigured means the credential has no usable secret.
var ErrMisconfigured = errors.New("credential misconfigured")

// ErrBadRoute means the route names no header a credential can go in.
var ErrBadRoute = errors.New("route has no usable auth header")

// Injection is the header to set on the upstream request. Value holds the
// real secret: never log it, never put it in an error.
type Injection struct {
	Header string // canonical header name
	Value  string // prefix + secret
	// Beta is the OAuth beta flag to merge into anthropic-beta ("" = none).
	Beta  string
	OAuth bool
}

// IsOAuth reports whether c is an OAuth credential: type "oauth", or a
// legacy row without a type that has an access_token member.
func IsOAuth(c creddb.Credential) bool {
	_, hasAccess := c["access_token"]
	v, present := c["type"]
	if !present || v == nil {
		return hasAccess
	}
	t, isString := v.(string)
	switch {
	case !isString:
		return false
	case t == "oauth":
		return true
	case t == "":
		return hasAccess
	}
	return false
}

// Select returns the injection for credential c on route r.
func Select(c creddb.Credential, r routes.Route) (Injection, error) {
	if IsOAuth(c) {
		secret := c.String("access_token")
		if secret == "" {
			return Injection{}, ErrMisconfigured
		}
		beta := DefaultBeta
		if v, ok := c["beta_header"].(string); ok {
			beta = v
		}
		return Injection{Header: "Authorization", Value: "Bearer " + secret, Beta: beta, OAuth: true}, nil
	}
	secret := c.String("token")
	if secret == "" {
		secret = c.String("key")
	}
	if secret == "" {
		return Injection{}, ErrMisconfigured
	}
	if !routes.UsableAuthHeader(r.AuthHeader) {
		return Injection{}, ErrBadRoute
	}
	header, prefix := r.AuthHeader, r.AuthPrefix
	if strings.EqualFold(header, routes.Dynamic) {
		header, prefix = "x-api-key", ""
	}
	return Injection{Header: http.CanonicalHeaderKey(header), Value: prefix + secret}, nil
}

// Valid reports whether the injection can go on the wire: a secret with a
// line break or NUL would be refused by the transport, and a secret that
// does would split headers.
func (in Injection) Valid() bool {
	return !strings.ContainsAny(in.Value, "\r\n\x00") && !strings.ContainsAny(in.Beta, "\r\n\x00")
}

// Apply sets the credential header (replacing every spelling of it) and,
// for OAuth, merges the beta flag into exactly one anthropic-beta header.
// The phantom headers must have been removed before.
func (in Injection) Apply(h http.Header) {
	deleteFold(h, in.Header)
	h[in.Header] = []string{in.Value}
	if !in.OAuth || in.Beta == "" {
		return
	}
	existing := strings.Join(valuesFold(h, BetaHeader), ",")
	deleteFold(h, BetaHeader)
	switch {
	case existing == "":
		h[BetaHeader] = []string{in.Beta}
	case strings.Contains(existing, in.Beta):
		h[BetaHeader] = []string{existing}
	default:
		h[BetaHeader] = []string{existing + "," + in.Beta}
	}
}

// valuesFold returns every value of name under any spelling of the name:
// the canonical spelling first, then the others in sorted order, so the
// merged header is the same on every run.
func valuesFold(h http.Header, name string) []string {
	canon := http.CanonicalHeaderKey(name)
	out := append([]string(nil), h[canon]...)
	var others []string
	for k := range h {
		if k != canon && strings.EqualFold(k, name) {
			others = append(others, k)
		}
	}
	sort.Strings(others)
	for _, k := range others {
		out = append(out, h[k]...)
	}
	return out
}

// deleteFold removes name under any spelling.
func deleteFold(h http.Header, name string) {
	for k := range h {
		if strings.EqualFold(k, name) {
			delete(h, k)
		}
	}
}
