// Package sshkeys is the ssh-keys.json contract (docs/formats.md, SSH key map): which
// key pairs belong to which project. Writers lock the data file itself with
// LOCK_EX and replace it atomically; readers hold LOCK_SH while reading.
package sshkeys

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
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

// Update registers a key pair for project (docs/formats.md, SSH key map): an entry with the same
// private key path is replaced in place, otherwise the pair is appended; the
// project's value is written back as a list and other projects are untouched.
// An invalid file is left as it is and reported.
func Update(path, project, privateKey, publicKey string) error {
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
		enc, err := json.Marshal(newEntry)
		if err != nil {
			return nil, err
		}
		replaced := false
		for i, el := range list {
			var v struct {
				PrivateKey *string `json:"private_key"`
			}
			if json.Unmarshal(el, &v) == nil && v.PrivateKey != nil && *v.PrivateKey == privateKey {
				list[i] = enc
				replaced = true
				break
			}
		}
		if !replaced {
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
