// Package secretscan finds credentials in pushed file contents
// (docs/gate.md, Secret scanning): the ecosystem's own tokens, private key
// blocks and well-known provider formats. It reports where (path, line)
// and what kind, never the matched text. A cheap substring search for each
// format's fixed marker runs over the whole blob; only around a marker is
// the format's full pattern checked, so clean content costs one pass per
// marker family.
package secretscan

import (
	"bytes"
	"regexp"
)

// Finding is one credential: the file, its 1-based line and the kind
// (a name from the list in docs/gate.md, Secret scanning).
type Finding struct {
	Path string `json:"path"`
	Line int    `json:"line"`
	Kind string `json:"kind"`
}

type rule struct {
	marker string         // fixed text every match contains, at offset back of the match
	back   int            // how many bytes before the marker a match may start
	re     *regexp.Regexp // anchored with ^ at the match start
	kind   string
}

// rules lists the formats (docs/gate.md, Secret scanning).
var rules = []rule{
	{marker: "terok-", re: regexp.MustCompile(`^terok-g-[0-9a-f]{32}`), kind: "terok-gate-token"},
	{marker: "terok-", re: regexp.MustCompile(`^terok-p-[0-9a-f]{32}`), kind: "terok-phantom-token"},
	{marker: "PRIVATE KEY", back: 24, re: regexp.MustCompile(`-----BEGIN ((RSA|DSA|EC|OPENSSH|ENCRYPTED|PGP|SSH2 ENCRYPTED) )?PRIVATE KEY( BLOCK)?-----`), kind: "private-key"},
	{marker: "AKIA", re: regexp.MustCompile(`^AKIA[0-9A-Z]{16}`), kind: "aws-access-key-id"},
	{marker: "ASIA", re: regexp.MustCompile(`^ASIA[0-9A-Z]{16}`), kind: "aws-access-key-id"},
	{marker: "gh", re: regexp.MustCompile(`^(gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82})`), kind: "github-token"},
	{marker: "glpat-", re: regexp.MustCompile(`^glpat-[A-Za-z0-9_-]{20}`), kind: "gitlab-token"},
	{marker: "xox", re: regexp.MustCompile(`^xox[abposr]-[A-Za-z0-9-]{10,}`), kind: "slack-token"},
	{marker: "sk-", re: regexp.MustCompile(`^sk-ant-[A-Za-z0-9_-]{32,}`), kind: "anthropic-key"},
	{marker: "sk-", re: regexp.MustCompile(`^sk-proj-[A-Za-z0-9_-]{32,}`), kind: "openai-key"},
	{marker: "AIza", re: regexp.MustCompile(`^AIza[0-9A-Za-z_-]{35}`), kind: "google-api-key"},
	{marker: "k_live_", back: 1, re: regexp.MustCompile(`^[sr]k_live_[0-9a-zA-Z]{24,}`), kind: "stripe-key"},
}

// window is how many bytes after a match start a pattern may look at.
const window = 256

// binaryProbe is how much of a blob is looked at for a NUL byte: like git,
// content with a NUL there is binary and not scanned.
const binaryProbe = 8000

// Binary reports whether data looks binary (a NUL in its first 8000 bytes).
func Binary(data []byte) bool {
	return bytes.IndexByte(data[:min(len(data), binaryProbe)], 0) >= 0
}

// Scan returns the first credential in data (the one at the lowest offset),
// or false. Binary content is not scanned. Each distinct marker is searched
// once; at each of its occurrences every rule of that marker is tried.
func Scan(path string, data []byte) (Finding, bool) {
	if Binary(data) {
		return Finding{}, false
	}
	best, kind := -1, ""
	for _, g := range groups {
		limit := len(data)
		if best >= 0 {
			limit = min(len(data), best+g.back+len(g.marker))
		}
		for from := 0; from < limit; {
			i := bytes.Index(data[from:limit], g.marker)
			if i < 0 {
				break
			}
			at := from + i
			hit := false
			for _, r := range g.rules {
				start := max(0, at-r.back)
				m := r.re.FindIndex(data[start:min(len(data), at+window)])
				if m == nil {
					continue
				}
				if s := start + m[0]; best < 0 || s < best {
					best, kind = s, r.kind
				}
				hit = true
			}
			if hit {
				break
			}
			from = at + 1
		}
	}
	if best < 0 {
		return Finding{}, false
	}
	return Finding{Path: path, Line: bytes.Count(data[:best], []byte("\n")) + 1, Kind: kind}, true
}

type group struct {
	marker []byte
	back   int
	rules  []rule
}

// groups are the rules by marker, in the order of rules.
var groups = func() []group {
	var gs []group
	idx := map[string]int{}
	for _, r := range rules {
		i, ok := idx[r.marker]
		if !ok {
			i = len(gs)
			idx[r.marker] = i
			gs = append(gs, group{marker: []byte(r.marker)})
		}
		gs[i].rules = append(gs[i].rules, r)
		gs[i].back = max(gs[i].back, r.back)
	}
	return gs
}()
