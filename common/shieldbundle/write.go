package shieldbundle

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"terok.dev/sandbox/common/atomicfile"
	"terok.dev/sandbox/common/filelock"
	"terok.dev/sandbox/common/ruleset"
)

// Writers replace the file atomically (a concurrent reader such as the hook
// sees the old or the new list, never a torn one) and take the bundle lock
// (<dir>/.bundle.lock) so that concurrent live operations on one container
// do not lose each other's read-modify-write.

func lockFor(path string) (*filelock.Lock, error) {
	return filelock.Exclusive(filepath.Join(filepath.Dir(path), lockFile))
}

func render(lines []string) []byte {
	if len(lines) == 0 {
		return []byte{}
	}
	return []byte(strings.Join(lines, "\n") + "\n")
}

// WriteIPFile writes ips canonicalised, de-duplicated (first wins), one per
// line with a trailing newline; an empty list gives an empty file. Any
// invalid value is an error and nothing is written.
func WriteIPFile(path string, ips []string) error {
	out, err := canonicalIPs(ips)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	l, err := lockFor(path)
	if err != nil {
		return err
	}
	defer l.Close()
	return atomicfile.WriteFile(path, render(out), 0o600)
}

func canonicalIPs(ips []string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for _, ip := range ips {
		c, err := ruleset.CanonicalIP(ip)
		if err != nil {
			return nil, err
		}
		if !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	return out, nil
}

// WriteDomainFile writes validated, lowercased, de-duplicated domains; an
// invalid domain is an error and nothing is written.
func WriteDomainFile(path string, domains []string) error {
	seen := map[string]bool{}
	var out []string
	for _, d := range domains {
		v, ok := ruleset.ValidDomain(d)
		if !ok {
			return fmt.Errorf("write %s: invalid domain '%s'", path, d)
		}
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	l, err := lockFor(path)
	if err != nil {
		return err
	}
	defer l.Close()
	return atomicfile.WriteFile(path, render(out), 0o600)
}

// normalise validates value for the file kind given by the file name: IP
// files hold canonical addresses, domain files validated domains.
func normalise(path, value string) (string, error) {
	switch filepath.Base(path) {
	case FileLiveDomains, FileDeniedDomains, FileProfileDomains:
		d, ok := ruleset.ValidDomain(value)
		if !ok {
			return "", fmt.Errorf("invalid domain '%s'", value)
		}
		return d, nil
	case FileProfileAllowed, FileLiveAllowed, FileDenyList:
		return ruleset.CanonicalIP(value)
	}
	return "", fmt.Errorf("%s is not a line file of the shield bundle", path)
}

// AppendUniqueLine adds value (validated and normalised for the file kind)
// at the end of the line file unless an equal line is present. It reports
// whether the file changed.
func AppendUniqueLine(path, value string) (bool, error) {
	return editLines(path, value, "append to", func(v string, lines []string) (bool, error) {
		if slices.Contains(lines, v) {
			return false, nil
		}
		return true, atomicfile.WriteFile(path, render(append(lines, v)), 0o600)
	})
}

// RemoveLine deletes value from the line file, keeping the order of the
// others, or sorting them when sorted is set (deny.list). It reports whether
// the value was present.
func RemoveLine(path, value string, sorted bool) (bool, error) {
	return editLines(path, value, "remove from", func(v string, lines []string) (bool, error) {
		out := lines[:0:0]
		found := false
		for _, x := range lines {
			if x == v {
				found = true
			} else {
				out = append(out, x)
			}
		}
		if !found {
			return false, nil
		}
		if sorted {
			sort.Strings(out)
		}
		return true, atomicfile.WriteFile(path, render(out), 0o600)
	})
}

// editLines is the skeleton of a line file edit: value validated and
// normalised for the file kind (what names the edit in the error), the
// file's lock held, its normalised lines read, then edit, whose report it
// returns.
func editLines(path, value, what string, edit func(v string, lines []string) (bool, error)) (bool, error) {
	v, err := normalise(path, value)
	if err != nil {
		return false, fmt.Errorf("%s %s: %w", what, path, err)
	}
	l, err := lockFor(path)
	if err != nil {
		return false, err
	}
	defer l.Close()
	lines, err := readNormalised(path)
	if err != nil {
		return false, err
	}
	return edit(v, lines)
}

// ContainsLine reports whether the line file holds value (compared in
// normalised form).
func ContainsLine(path, value string) (bool, error) {
	v, err := normalise(path, value)
	if err != nil {
		return false, err
	}
	lines, err := readNormalised(path)
	if err != nil {
		return false, err
	}
	return slices.Contains(lines, v), nil
}

func readNormalised(path string) ([]string, error) {
	switch filepath.Base(path) {
	case FileLiveDomains, FileDeniedDomains, FileProfileDomains:
		return ReadDomainFile(path, nil)
	default:
		return ReadIPFile(path)
	}
}

// WriteValue writes a one-value file (value + newline) atomically.
func WriteValue(path, value string) error {
	if strings.ContainsAny(value, "\n\r\x00") {
		return fmt.Errorf("write %s: value contains a line break", path)
	}
	return atomicfile.WriteFile(path, []byte(value+"\n"), 0o600)
}

// RemoveIfExists deletes path; a missing file is not an error.
func RemoveIfExists(path string) error {
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// LockBundle takes the bundle lock of stateDir, the one every line-file
// writer here takes, for a caller's own read-modify-write of several
// files (a live change's ruleset.nft and ruleset.nft.sha256). While
// holding it the caller must not call those writers: the lock is not
// reentrant.
func LockBundle(stateDir string) (*filelock.Lock, error) {
	return filelock.Exclusive(filepath.Join(stateDir, lockFile))
}
