// Package route is the gate's strict request router (docs/gate.md, Request handling). It
// matches the raw, undecoded request target, so percent-encoding, slashes
// and dot segments can never smuggle a path outside the base path.
package route

import "strings"

// Kinds of git endpoint the gate serves.
const (
	InfoRefs     = "/info/refs"
	UploadPack   = "/git-upload-pack"
	ReceivePack  = "/git-receive-pack"
	Head         = "/HEAD"
	maxRepoBytes = 255 // one path segment; longer names are not file names
)

// Route is a matched request target.
type Route struct {
	// Repo is "<name>.git", a single path segment of [A-Za-z0-9._-].
	Repo string
	// Path is one of InfoRefs, UploadPack, ReceivePack, Head.
	Path string
	// Query is the raw query string after the first '?', possibly empty.
	Query string
}

// PathInfo is the CGI PATH_INFO of the route: "/<repo><path>".
func (r Route) PathInfo() string { return "/" + r.Repo + r.Path }

// Project is the repository name without ".git".
func (r Route) Project() string { return strings.TrimSuffix(r.Repo, ".git") }

// Parse matches a raw request target (http.Request.RequestURI) against
// ^/([A-Za-z0-9._-]+\.git)(/info/refs|/git-upload-pack|/git-receive-pack|/HEAD)$
// after splitting off the query at the first '?'.
func Parse(target string) (Route, bool) {
	path, query, _ := strings.Cut(target, "?")
	if len(path) < 2 || path[0] != '/' {
		return Route{}, false
	}
	rest := path[1:]
	slash := strings.IndexByte(rest, '/')
	if slash < 0 {
		return Route{}, false
	}
	repo, suffix := rest[:slash], rest[slash:]
	switch suffix {
	case InfoRefs, UploadPack, ReceivePack, Head:
	default:
		return Route{}, false
	}
	if !validRepo(repo) {
		return Route{}, false
	}
	return Route{Repo: repo, Path: suffix, Query: query}, true
}

// validRepo: [A-Za-z0-9._-]+ followed by ".git". Because the segment always
// ends in ".git" it can never be "." or "..", and there is no '/' or '%' in
// the alphabet, so the name stays one entry directly under the base path.
func validRepo(repo string) bool {
	if len(repo) > maxRepoBytes || len(repo) <= len(".git") || !strings.HasSuffix(repo, ".git") {
		return false
	}
	for i := 0; i < len(repo); i++ {
		c := repo[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '_', c == '-', c == '.':
		default:
			return false
		}
	}
	return true
}
