// Package profile is the shield's allowlist profiles (docs/shield.md,
// Profiles): the bundled ones embedded in the binary, user profiles that
// shadow them, the strict parser, composition and the catalog. It needs
// nothing of the shield itself, so the SSH manager can read a bundled
// profile's git host without linking the firewall code.
package profile

import (
	"bufio"
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"terok.dev/sandbox/common/ruleset"
)

// The bundled profiles are part of the compatibility surface
// (docs/shield.md, Profiles): the same names must yield the same entries, so they ship inside the
// binary rather than as files an installation could lose.
//
//go:embed bundled/*.txt
var bundledFS embed.FS

// profileNamePattern is the profile name rule (docs/config.md, The configuration). A name is used to build a file path,
// so anything else (separators, a leading dot) is refused before any lookup.
var profileNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// maxProfileSize bounds a user profile; a profile is a short list, and a
// huge file is a mistake we report instead of reading into memory.
const maxProfileSize = 4 << 20

// ErrNotFound is wrapped by Store.Load when no file has the name.
var ErrNotFound = errors.New("profile not found")

// ValidName reports whether name is a safe profile name.
func ValidName(name string) bool { return profileNamePattern.MatchString(name) }

// NormalizeDomain trims and lowercases d and reports whether it is a valid
// allowlist domain (docs/shield-resolver.md, Allowlist, shared with the hook through
// common/ruleset). The leading "*." is kept.
func NormalizeDomain(d string) (string, bool) { return ruleset.ValidDomain(d) }

// CanonicalAddr parses an IPv4/IPv6 address or CIDR and renders it in the
// canonical form common/ruleset uses (and nft lists).
func CanonicalAddr(s string) (string, error) { return ruleset.CanonicalIP(s) }

// IsAddrEntry reports whether s parses as an IP address or CIDR.
func IsAddrEntry(s string) bool {
	_, err := CanonicalAddr(s)
	return err == nil
}

// Parse parses profile text (docs/shield.md, Profiles). Every entry must be a
// domain or an IP/CIDR: a profile line such as "1.2.3.4; flush ruleset" is
// an error naming the source and the line, never something silently kept
// or dropped, because the profile decides what a container may reach.
func Parse(source string, data []byte) ([]string, error) {
	var entries []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxProfileSize)
	line := 0
	for sc.Scan() {
		line++
		raw := sc.Text()
		if line == 1 {
			raw = strings.TrimPrefix(raw, "\ufeff")
		}
		s := strings.TrimSpace(raw)
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		if IsAddrEntry(s) {
			entries = append(entries, s)
			continue
		}
		if _, ok := NormalizeDomain(s); ok {
			entries = append(entries, s)
			continue
		}
		return nil, fmt.Errorf("profile %s line %d: %q is neither a domain nor an IP address/CIDR; fix or remove the line", source, line, truncate(s, 80))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("profile %s: %w", source, err)
	}
	return entries, nil
}

// message keeps an operator-facing message as worded (capitalised, as the
// shield's other messages are); %w wraps as with fmt.Errorf.
type message struct{ err error }

func (e *message) Error() string { return e.err.Error() }
func (e *message) Unwrap() error { return e.err }

func messagef(format string, a ...any) error { return &message{fmt.Errorf(format, a...)} }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// Store looks profiles up in a user directory first and then among the
// bundled ones (docs/shield.md, Profiles).
type Store struct {
	// UserDir is the user profile directory; "" means bundled profiles only.
	UserDir string
}

// Load returns the entries of one profile.
func (p Store) Load(name string) ([]string, error) {
	if !ValidName(name) {
		return nil, messagef("Unsafe name: '%s'", name)
	}
	if p.UserDir != "" {
		path := filepath.Join(p.UserDir, name+".txt")
		data, err := readBounded(path)
		switch {
		case err == nil:
			return Parse(path, data)
		case !errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("read profile %s: %w", path, err)
		}
	}
	data, err := bundledFS.ReadFile("bundled/" + name + ".txt")
	if err != nil {
		return nil, messagef("Profile not found: '%s' (known profiles: %s; user profiles go to %s): %w",
			name, strings.Join(p.List(), ", "), p.userDirHint(), ErrNotFound)
	}
	return Parse("bundled:"+name, data)
}

func (p Store) userDirHint() string {
	if p.UserDir == "" {
		return "<no user profile directory configured>"
	}
	return p.UserDir
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file")
	}
	if st.Size() > maxProfileSize {
		return nil, fmt.Errorf("file is %d bytes, larger than the %d byte limit for a profile", st.Size(), maxProfileSize)
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(f); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Compose concatenates the entries of names in order, dropping exact
// duplicates (first occurrence wins). Any invalid or missing profile fails
// the whole composition: a launch must never go ahead with a partial list.
func (p Store) Compose(names []string) ([]string, error) {
	if len(names) == 0 {
		return nil, fmt.Errorf("no shield profiles given; name at least one (e.g. dev-standard)")
	}
	seen := map[string]bool{}
	var out []string
	for _, n := range names {
		entries, err := p.Load(n)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if !seen[e] {
				seen[e] = true
				out = append(out, e)
			}
		}
	}
	return out, nil
}

// List is the sorted union of bundled and user profile names.
func (p Store) List() []string {
	set := map[string]bool{}
	if ents, err := fs.ReadDir(bundledFS, "bundled"); err == nil {
		for _, e := range ents {
			if n, ok := strings.CutSuffix(e.Name(), ".txt"); ok {
				set[n] = true
			}
		}
	}
	if p.UserDir != "" {
		if ents, err := os.ReadDir(p.UserDir); err == nil {
			for _, e := range ents {
				if n, ok := strings.CutSuffix(e.Name(), ".txt"); ok && !e.IsDir() && ValidName(n) {
					set[n] = true
				}
			}
		}
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// SplitEntries separates IP/CIDR literals from domains, keeping order.
func SplitEntries(entries []string) (addrs, domains []string) {
	for _, e := range entries {
		if IsAddrEntry(e) {
			addrs = append(addrs, e)
		} else {
			domains = append(domains, e)
		}
	}
	return addrs, domains
}

// Info describes one profile `shield profiles` lists.
type Info struct {
	Name string `json:"name"`
	// Source is "bundled" or "user".
	Source string `json:"source"`
	// Path is the user profile's file, "" for a bundled one.
	Path string `json:"path,omitempty"`
	// Shadows is true for a user profile that overrides the bundled
	// profile of the same name (the bundled one is then not used).
	Shadows bool `json:"shadows_bundled,omitempty"`
	// Entries, Domains and Addresses count the valid entries.
	Entries   int `json:"entries"`
	Domains   int `json:"domains"`
	Addresses int `json:"addresses"`
	// Configured: the name is in shield_profiles.
	Configured bool `json:"configured,omitempty"`
	// Error is why the profile cannot be used (an invalid line, an
	// unreadable file); the counts are then zero.
	Error string `json:"error,omitempty"`
}

// Catalog lists every profile a launch could use, sorted by name: the
// user profiles of UserDir and the bundled ones, a user profile shadowing
// the bundled one of its name. configured marks the names in use. A
// profile that does not load is listed with its Error, not left out.
func (p Store) Catalog(configured []string) []Info {
	inUse := map[string]bool{}
	for _, n := range configured {
		inUse[n] = true
	}
	var out []Info
	for _, name := range p.List() {
		info := Info{Name: name, Source: "bundled", Configured: inUse[name]}
		_, bundledErr := bundledFS.ReadFile("bundled/" + name + ".txt")
		if p.UserDir != "" {
			path := filepath.Join(p.UserDir, name+".txt")
			if _, err := os.Lstat(path); err == nil {
				info.Source, info.Path, info.Shadows = "user", path, bundledErr == nil
			}
		}
		entries, err := p.Load(name)
		if err != nil {
			info.Error = err.Error()
		} else {
			addrs, domains := SplitEntries(entries)
			info.Entries, info.Addresses, info.Domains = len(entries), len(addrs), len(domains)
		}
		out = append(out, info)
	}
	return out
}
