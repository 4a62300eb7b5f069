// Package routes loads and validates the proxy routes file
// (docs/formats.md, Proxy routes file): provider name → upstream origin, header rules and
// optional OAuth refresh settings. The file is read once at startup.
package routes

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sort"
	"strings"

	"terok.dev/sandbox/common/scope"
	"terok.dev/sandbox/credproxy/internal/mask"
)

// Defaults of a route's header rules.
const (
	DefaultAuthHeader = "Authorization"
	DefaultAuthPrefix = "Bearer "
	// Dynamic is the auth_header value meaning "x-api-key, no prefix".
	Dynamic = "dynamic"
)

// OAuthRefresh enables background refresh of a provider's OAuth credentials.
type OAuthRefresh struct {
	TokenURL     string
	ClientID     string
	Scope        string // "" when absent
	HasScope     bool
	ClientSecret string
	HasSecret    bool
}

// Route is one provider's validated route.
type Route struct {
	Provider string
	// Scheme and Host ("host" or "host:port") of the upstream origin; the
	// upstream value's path, query and fragment are dropped (docs/formats.md, Proxy routes file).
	Scheme string
	Host   string
	// AuthHeader is the header that receives a non-OAuth credential.
	AuthHeader string
	// AuthPrefix precedes a non-OAuth credential (may be "").
	AuthPrefix string
	// Refresh is nil unless oauth_refresh is configured.
	Refresh *OAuthRefresh
	// Scope holds the optional allow/deny rules (docs/credential-proxy.md,
	// "Scopes"); the zero Scope allows everything.
	Scope scope.Scope
	// Mask hides path segments in the audit records (docs/credential-proxy.md,
	// "Audit records"); the zero Mask records paths unchanged.
	Mask mask.Masks
}

// Origin is scheme://host of the upstream.
func (r Route) Origin() string { return r.Scheme + "://" + r.Host }

// Table maps provider names to routes.
type Table map[string]Route

// Providers returns the provider names, sorted.
func (t Table) Providers() []string {
	out := make([]string, 0, len(t))
	for p := range t {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// Load reads and parses the routes file; every error names the file.
func Load(path string) (Table, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read routes file %s: %w", path, err)
	}
	t, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("routes file %s: %w", path, err)
	}
	return t, nil
}

// Parse validates routes JSON: an object whose values are objects with an
// absolute http(s) upstream URL. Unknown members are ignored; a JSON null
// auth_prefix counts as absent.
func Parse(data []byte) (Table, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("not a JSON object of routes: %w", err)
	}
	if raw == nil {
		return nil, errors.New("not a JSON object of routes (got null)")
	}
	t := make(Table, len(raw))
	// In name order, so a file with several bad routes always names the same
	// one first (map order is random).
	names := make([]string, 0, len(raw))
	for name := range raw {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		msg := raw[name]
		r, err := parseRoute(name, msg)
		if err != nil {
			return nil, err
		}
		t[name] = r
	}
	return t, nil
}

type rawRoute struct {
	Upstream     *string         `json:"upstream"`
	AuthHeader   *string         `json:"auth_header"`
	AuthPrefix   *string         `json:"auth_prefix"`
	OAuthRefresh json.RawMessage `json:"oauth_refresh"`
	Allow        []scope.Rule    `json:"allow"`
	Deny         []scope.Rule    `json:"deny"`
	Mask         []string        `json:"mask"`
}

type rawRefresh struct {
	TokenURL     *string `json:"token_url"`
	ClientID     *string `json:"client_id"`
	Scope        *string `json:"scope"`
	ClientSecret *string `json:"client_secret"`
}

func parseRoute(name string, msg json.RawMessage) (Route, error) {
	if name == "" {
		return Route{}, errors.New("route with an empty provider name; give every route a provider name")
	}
	if t := bytes.TrimSpace(msg); len(t) == 0 || t[0] != '{' {
		return Route{}, bad(name, "is not a JSON object")
	}
	var rr rawRoute
	if err := json.Unmarshal(msg, &rr); err != nil {
		return Route{}, bad(name, "is invalid: %w", err)
	}
	if rr.Upstream == nil {
		return Route{}, bad(name, "missing required 'upstream' field")
	}
	u, err := url.Parse(*rr.Upstream)
	if err != nil {
		return Route{}, bad(name, "invalid 'upstream' URL: %w", err)
	}
	scheme := strings.ToLower(u.Scheme)
	if (scheme != "http" && scheme != "https") || u.Host == "" || u.Opaque != "" || u.User != nil {
		return Route{}, bad(name, "'upstream' must be an absolute http:// or https:// URL without user info, got %q", *rr.Upstream)
	}
	if strings.ContainsAny(u.Host, " \t\r\n/\\@") {
		return Route{}, bad(name, "'upstream' has an invalid host")
	}
	r := Route{Provider: name, Scheme: scheme, Host: u.Host, AuthHeader: DefaultAuthHeader, AuthPrefix: DefaultAuthPrefix}
	if rr.AuthHeader != nil {
		h := *rr.AuthHeader
		if !validHeaderName(h) {
			return Route{}, bad(name, "'auth_header' %q is not a valid header name", h)
		}
		if reservedHeader(h) {
			return Route{}, bad(name, "'auth_header' %q is a framing or hop-by-hop header; use the provider's credential header", h)
		}
		r.AuthHeader = h
	}
	if rr.AuthPrefix != nil {
		if strings.ContainsAny(*rr.AuthPrefix, "\r\n\x00") {
			return Route{}, bad(name, "'auth_prefix' contains a line break or NUL")
		}
		r.AuthPrefix = *rr.AuthPrefix
	}
	if len(rr.OAuthRefresh) > 0 && string(bytes.TrimSpace(rr.OAuthRefresh)) != "null" {
		var rf rawRefresh
		if t := bytes.TrimSpace(rr.OAuthRefresh); t[0] != '{' {
			return Route{}, bad(name, "'oauth_refresh' must be an object")
		}
		if err := json.Unmarshal(rr.OAuthRefresh, &rf); err != nil {
			return Route{}, bad(name, "'oauth_refresh': %w", err)
		}
		if rf.TokenURL == nil || *rf.TokenURL == "" {
			return Route{}, bad(name, "'oauth_refresh' missing required 'token_url' field")
		}
		if rf.ClientID == nil {
			return Route{}, bad(name, "'oauth_refresh' missing required 'client_id' field")
		}
		tu, err := url.Parse(*rf.TokenURL)
		if err != nil || (tu.Scheme != "http" && tu.Scheme != "https") || tu.Host == "" {
			return Route{}, bad(name, "'oauth_refresh.token_url' must be an absolute http:// or https:// URL")
		}
		ref := &OAuthRefresh{TokenURL: *rf.TokenURL, ClientID: *rf.ClientID}
		if rf.Scope != nil {
			ref.Scope, ref.HasScope = *rf.Scope, true
		}
		if rf.ClientSecret != nil {
			ref.ClientSecret, ref.HasSecret = *rf.ClientSecret, true
		}
		r.Refresh = ref
	}
	if r.Scope, err = scope.New(rr.Allow, rr.Deny); err != nil {
		return Route{}, bad(name, "has a malformed scope rule: %w", err)
	}
	if r.Mask, err = mask.New(rr.Mask); err != nil {
		return Route{}, bad(name, "has a malformed mask: %w", err)
	}
	return r, nil
}

// reservedHeader: headers the transport owns; a credential there would be
// dropped or would break the request's framing.
func reservedHeader(h string) bool {
	switch strings.ToLower(h) {
	case "host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer",
		"upgrade", "proxy-authorization", "proxy-authenticate", "proxy-connection", "expect":
		return true
	}
	return false
}

// UsableAuthHeader reports whether h can carry a credential: a valid header
// name that the transport does not own. Load refuses routes that fail it;
// the injector checks again so a hand-built Route cannot put a secret in a
// header that would be dropped or split the request.
func UsableAuthHeader(h string) bool {
	return strings.EqualFold(h, Dynamic) || (validHeaderName(h) && !reservedHeader(h))
}

// validHeaderName accepts an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// Error is a validation error of one route; its text names the route the way
// the spec's example does ("Route 'claude' missing required 'upstream' field").
type Error struct {
	Route string
	Msg   string
	Err   error
}

func (e *Error) Error() string { return "Route '" + e.Route + "' " + e.Msg }

// Unwrap returns the underlying error, if any.
func (e *Error) Unwrap() error { return e.Err }

func bad(name, format string, a ...any) error {
	err := fmt.Errorf(format, a...)
	return &Error{Route: name, Msg: err.Error(), Err: errors.Unwrap(err)}
}
