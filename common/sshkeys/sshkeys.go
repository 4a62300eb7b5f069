// Package sshkeys is the ssh-keys.json contract (docs/formats.md, SSH key map): which
// key pairs belong to which project. Writers lock the data file itself with
// LOCK_EX and replace it atomically; readers hold LOCK_SH while reading.
package sshkeys

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"terok.dev/sandbox/common/atomicfile"
	"terok.dev/sandbox/common/filelock"
	"terok.dev/sandbox/common/jsonobj"
	"terok.dev/sandbox/common/names"
)

// Entry is one key pair, both paths absolute.
type Entry struct {
	PrivateKey string `json:"private_key"`
	PublicKey  string `json:"public_key"`
	// Destinations, when the member is present, restrict the key to
	// sessions bound to these hosts (docs/ssh-agent.md, Destination-bound
	// keys): host patterns and/or host key fingerprints. Absent: no
	// restriction. Readers that predate the member ignore it.
	Destinations []string `json:"destinations,omitempty"`
	// Problem is set when a destinations member is present but unusable
	// (not a list of valid destinations). Such a key must not be served at
	// all: serving it unrestricted would lift the operator's restriction.
	Problem string `json:"-"`
}

// Restricted reports whether the entry carries a destinations member
// (valid or not).
func (e Entry) Restricted() bool { return e.Destinations != nil || e.Problem != "" }

// MaxDestinations bounds an entry's destinations.
const MaxDestinations = 64

// FingerprintPrefix starts a host key fingerprint destination.
const FingerprintPrefix = "SHA256:"

// DestinationExample is shown with every refused destination.
const DestinationExample = "e.g. github.com, *.example.org or SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s"

// ValidateDestination checks one destination: a host key fingerprint
// `SHA256:` + 43 characters of unpadded base64 (a SHA-256, as ssh-keygen -l
// prints it), or a host pattern of letters, digits, '.', '-', '_', ':'
// (IPv6) and the wildcards '*' and '?', at most 253 characters, not
// starting with '-' or '.' (docs/ssh-agent.md, Destination-bound keys).
func ValidateDestination(d string) error {
	if strings.HasPrefix(d, FingerprintPrefix) {
		b64 := d[len(FingerprintPrefix):]
		raw, err := base64.RawStdEncoding.DecodeString(b64)
		if err != nil || len(raw) != sha256.Size {
			return fmt.Errorf("destination %q: a fingerprint is SHA256: and 43 base64 characters (%s)", d, DestinationExample)
		}
		return nil
	}
	if d == "" || len(d) > 253 {
		return fmt.Errorf("destination %q: a host pattern has 1..253 characters (%s)", d, DestinationExample)
	}
	if d[0] == '-' || d[0] == '.' || strings.Contains(d, "..") {
		return fmt.Errorf("destination %q: a host pattern does not start with '-' or '.' nor contain '..' (%s)", d, DestinationExample)
	}
	for _, r := range d {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune(".-_:*?", r):
		default:
			return fmt.Errorf("destination %q: %q is not allowed in a host pattern (letters, digits, . - _ : * ?; %s)", d, r, DestinationExample)
		}
	}
	return nil
}

// ValidateDestinations checks a destinations list: 1..MaxDestinations
// valid entries.
func ValidateDestinations(ds []string) error {
	if len(ds) == 0 {
		return fmt.Errorf("destinations is empty; remove the member to lift the restriction, or name at least one (%s)", DestinationExample)
	}
	if len(ds) > MaxDestinations {
		return fmt.Errorf("%d destinations, at most %d", len(ds), MaxDestinations)
	}
	for _, d := range ds {
		if err := ValidateDestination(d); err != nil {
			return err
		}
	}
	return nil
}

// Check returns an error naming every entry of m whose destinations
// member is unusable (the agent refuses to start on one).
//
// Projects come in name order (map order is random), so the agent's refusal
// reads the same every time.
func Check(m Map) error {
	projects := make([]string, 0, len(m))
	for p := range m {
		projects = append(projects, p)
	}
	slices.Sort(projects)
	var errs []error
	for _, p := range projects {
		for _, e := range m[p] {
			if e.Problem != "" {
				errs = append(errs, fmt.Errorf("project %s key %s: %s", p, e.PrivateKey, e.Problem))
			}
		}
	}
	return errors.Join(errs...)
}

// Map is project id → key pairs in file order.
type Map map[string][]Entry

// Parse applies the reading rules of docs/formats.md, SSH key map. Invalid JSON or a non-object top
// level returns an empty map and the error (callers log it and go on with no
// keys); bad project values and elements are skipped.
func Parse(data []byte) (Map, error) {
	out := Map{}
	if len(bytes.TrimSpace(data)) == 0 {
		return out, nil
	}
	members, err := jsonobj.Parse(data)
	if err != nil {
		return out, err
	}
	for _, m := range members {
		if es := entriesOf(m.Value); len(es) > 0 {
			out[m.Key] = es
		}
	}
	return out, nil
}

// entriesOf reads a project value: an object is a one-element list, a list is
// used in order, anything else has no keys. Elements without string paths
// are skipped.
func entriesOf(raw json.RawMessage) []Entry {
	var elems []json.RawMessage
	switch firstByte(raw) {
	case '{':
		elems = []json.RawMessage{raw}
	case '[':
		if json.Unmarshal(raw, &elems) != nil {
			return nil
		}
	default:
		return nil
	}
	var out []Entry
	for _, el := range elems {
		var v map[string]json.RawMessage
		if json.Unmarshal(el, &v) != nil || v == nil {
			continue
		}
		var e Entry
		if json.Unmarshal(v["private_key"], &e.PrivateKey) != nil ||
			json.Unmarshal(v["public_key"], &e.PublicKey) != nil {
			continue
		}
		if raw, ok := v["destinations"]; ok {
			var ds []string
			switch err := json.Unmarshal(raw, &ds); {
			case err != nil || ds == nil:
				e.Problem = "destinations is not a list of strings"
			default:
				if err := ValidateDestinations(ds); err != nil {
					e.Problem = err.Error()
				} else {
					e.Destinations = ds
				}
			}
		}
		out = append(out, e)
	}
	return out
}

func firstByte(raw json.RawMessage) byte {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 {
		return 0
	}
	return t[0]
}

// Read loads the map under a shared lock. A missing file is an empty map with
// no error; an unreadable or invalid one is an empty map and the error.
func Read(path string) (Map, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Map{}, nil
	}
	if err != nil {
		return Map{}, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	if err := filelock.Flock(f, syscall.LOCK_SH); err != nil {
		return Map{}, fmt.Errorf("lock %s: %w", path, err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return Map{}, fmt.Errorf("read %s: %w", path, err)
	}
	m, err := Parse(data)
	if err != nil {
		return m, fmt.Errorf("parse %s: %w", path, err)
	}
	return m, nil
}

// Update registers the key pair p for p.Project (docs/formats.md, SSH key map): an entry with the same
// private key path is replaced in place, otherwise the pair is appended; the
// project's value is written back as a list and other projects are untouched.
// An invalid file is left as it is and reported.
//
// The other members of a replaced entry (destinations, and members this
// version does not know) are kept.
func Update(path string, p Pair) error {
	return Register(path, p, nil)
}

// Pair is a project's key pair as Update and Register take it: one value,
// not the project and the two key paths as three strings side by side, so
// the private and the public key cannot be swapped unnoticed.
type Pair struct {
	Project    string
	PrivateKey string // absolute path of the private key
	PublicKey  string // absolute path of the public key
}

// KeyRef names a registered key as SetDestinations takes it: its project
// and its private key's path.
type KeyRef struct {
	Project    string
	PrivateKey string
}

// Register is Update that also sets the entry's destinations: nil keeps
// what the entry has (none for a new one), a non-nil list must be valid
// and replaces them (docs/ssh-agent.md, Destination-bound keys).
func Register(path string, p Pair, destinations []string) error {
	project, privateKey, publicKey := p.Project, p.PrivateKey, p.PublicKey
	if destinations != nil {
		if err := ValidateDestinations(destinations); err != nil {
			return fmt.Errorf("update %s: %w", path, err)
		}
	}
	// The project id also names the project's key directory (docs/runner.md,
	// Names), so it follows the one name rule.
	if err := names.ValidateProjectID(project); err != nil {
		return fmt.Errorf("update %s: %w", path, err)
	}
	if !filepath.IsAbs(privateKey) || !filepath.IsAbs(publicKey) {
		return fmt.Errorf("update %s: key paths must be absolute (got %q, %q)", path, privateKey, publicKey)
	}
	return modify(path, func(members []jsonobj.Member) ([]jsonobj.Member, error) {
		newEntry := Entry{PrivateKey: privateKey, PublicKey: publicKey}
		idx := -1
		for i, m := range members {
			if m.Key == project {
				idx = i
				break
			}
		}
		var list []json.RawMessage
		if idx >= 0 {
			switch firstByte(members[idx].Value) {
			case '[':
				_ = json.Unmarshal(members[idx].Value, &list)
			case '{':
				list = []json.RawMessage{members[idx].Value}
			}
		}
		replaced := false
		for i, el := range list {
			var v map[string]json.RawMessage
			var pk string
			if json.Unmarshal(el, &v) == nil && v != nil && json.Unmarshal(v["private_key"], &pk) == nil && pk == privateKey {
				enc, err := mergeEntry(v, newEntry, destinations)
				if err != nil {
					return nil, err
				}
				list[i] = enc
				replaced = true
				break
			}
		}
		if !replaced {
			enc, err := mergeEntry(map[string]json.RawMessage{}, newEntry, destinations)
			if err != nil {
				return nil, err
			}
			list = append(list, enc)
		}
		value, err := json.Marshal(list)
		if err != nil {
			return nil, err
		}
		if idx >= 0 {
			members[idx].Value = value
		} else {
			members = append(members, jsonobj.Member{Key: project, Value: value})
		}
		return members, nil
	})
}

// mergeEntry writes e's paths (and destinations, when non-nil) over the
// members of an existing entry object.
func mergeEntry(v map[string]json.RawMessage, e Entry, destinations []string) (json.RawMessage, error) {
	set := func(k string, x any) error {
		b, err := json.Marshal(x)
		v[k] = b
		return err
	}
	if err := errors.Join(set("private_key", e.PrivateKey), set("public_key", e.PublicKey)); err != nil {
		return nil, err
	}
	if destinations != nil {
		if err := set("destinations", destinations); err != nil {
			return nil, err
		}
	}
	return json.Marshal(v)
}

// ErrNoEntry is returned by SetDestinations for a key that is not
// registered for the project.
var ErrNoEntry = errors.New("no such key registered for the project")

// SetDestinations sets (non-empty, validated) or removes (empty or nil) the
// destinations of k.Project's entry whose private key path is k.PrivateKey.
func SetDestinations(path string, k KeyRef, destinations []string) error {
	project, privateKey := k.Project, k.PrivateKey
	if len(destinations) > 0 {
		if err := ValidateDestinations(destinations); err != nil {
			return fmt.Errorf("update %s: %w", path, err)
		}
	}
	return modify(path, func(members []jsonobj.Member) ([]jsonobj.Member, error) {
		for i, m := range members {
			if m.Key != project {
				continue
			}
			var list []json.RawMessage
			switch firstByte(m.Value) {
			case '[':
				_ = json.Unmarshal(m.Value, &list)
			case '{':
				list = []json.RawMessage{m.Value}
			}
			for j, el := range list {
				var v map[string]json.RawMessage
				var pk string
				if json.Unmarshal(el, &v) != nil || v == nil || json.Unmarshal(v["private_key"], &pk) != nil || pk != privateKey {
					continue
				}
				if len(destinations) == 0 {
					delete(v, "destinations")
				} else {
					b, err := json.Marshal(destinations)
					if err != nil {
						return nil, err
					}
					v["destinations"] = b
				}
				enc, err := json.Marshal(v)
				if err != nil {
					return nil, err
				}
				list[j] = enc
				value, err := json.Marshal(list)
				if err != nil {
					return nil, err
				}
				members[i].Value = value
				return members, nil
			}
		}
		return nil, fmt.Errorf("%w: project %s, private key %s", ErrNoEntry, project, privateKey)
	})
}

// modify runs the locked cycle of docs/formats.md, SSH key map: open the data file, LOCK_EX, check the
// descriptor still names the path (another writer may have renamed a new file
// over it), read, change, replace atomically, unlock by closing.
func modify(path string, change func([]jsonobj.Member) ([]jsonobj.Member, error)) error {
	if err := atomicfile.MkdirPrivate(filepath.Dir(path)); err != nil {
		return err
	}
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("open %s: %w", path, err)
		}
		lk := filelock.Wrap(f)
		if err := filelock.Flock(f, syscall.LOCK_EX); err != nil {
			lk.Close()
			return fmt.Errorf("lock %s: %w", path, err)
		}
		same, err := sameFile(f, path)
		if err != nil {
			lk.Close()
			return err
		}
		if !same {
			lk.Close()
			continue
		}
		err = func() error {
			defer lk.Close()
			data, err := io.ReadAll(f)
			if err != nil {
				return fmt.Errorf("read %s: %w", path, err)
			}
			var members []jsonobj.Member
			if len(bytes.TrimSpace(data)) > 0 {
				members, err = jsonobj.Parse(data)
				if err != nil {
					return fmt.Errorf("%s is not a valid ssh-keys.json (%v); fix or move it, it was left unchanged", path, err)
				}
			}
			members, err = change(members)
			if err != nil {
				return err
			}
			out, err := jsonobj.Marshal(members)
			if err != nil {
				return err
			}
			return atomicfile.WriteFile(path, out, 0o600)
		}()
		return err
	}
}

func sameFile(f *os.File, path string) (bool, error) {
	fi, err := f.Stat()
	if err != nil {
		return false, fmt.Errorf("stat %s: %w", path, err)
	}
	pi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("stat %s: %w", path, err)
	}
	return os.SameFile(fi, pi), nil
}
