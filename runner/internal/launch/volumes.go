package launch

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// A task must not be able to change its own firewall: the shield's state
// dir (<task dir>/shield) holds the allowlist, the ruleset and the
// resolver's files the hook and the runner trust. So no volume may mount
// it, anything inside it, or anything containing it (docs/runner.md,
// "Volumes"; issue 11). A host source is judged by where it really leads:
// every symbolic link resolved, ".." taken after the link it follows, as
// the kernel does when podman mounts it.

// namedVolume is podman's volume name syntax; any other source that is not
// an absolute path would be taken relative to podman's working directory.
var namedVolume = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// checkVolumeSource refuses the host source of a volume (the part before
// the first ':' of a -v spec, or a --mount source) when it is neither an
// absolute path nor a named volume, or when it and the shield state dir
// stateDir contain one another. stateDir "" skips the containment check.
func checkVolumeSource(src, stateDir string) error {
	if !strings.HasPrefix(src, "/") {
		if namedVolume.MatchString(src) {
			return nil
		}
		return fmt.Errorf("host source %q is neither an absolute path nor a named volume", src)
	}
	if stateDir == "" {
		return nil
	}
	real, err := resolveHostPath(src)
	if err != nil {
		return fmt.Errorf("host source %q: %w", src, err)
	}
	state, err := resolveHostPath(stateDir)
	if err != nil {
		return fmt.Errorf("shield state dir %q: %w", stateDir, err)
	}
	if within(real, state) || within(state, real) {
		return fmt.Errorf("host source %q (%s) overlaps the task's shield state dir %s: the task could rewrite its own allowlist", src, real, state)
	}
	return nil
}

// within reports whether path a is b or lies inside it (both absolute and
// clean).
func within(a, b string) bool {
	rel, err := filepath.Rel(b, a)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// resolveHostPath is the absolute path p leads to. When p does not exist
// yet (the shield state dir before the pre-start, or a source podman will
// refuse), the longest existing prefix is resolved and the rest appended;
// a missing part that contains ".." or starts with a dangling link cannot
// be judged that way and is an error.
func resolveHostPath(p string) (string, error) {
	// A part that appears while p is resolved (the launch's own
	// background claim makes <state_dir>/task-ends, and so the state
	// dir, at the same time) is no dangling link: resolve again.
	for range 3 {
		real, err := resolveHostPathOnce(p)
		if !errors.Is(err, errAppeared) {
			return real, err
		}
	}
	return resolveHostPathOnce(p)
}

// errAppeared: a missing part of the path exists now and is no link.
var errAppeared = errors.New("a part of the path appeared while it was resolved")

func resolveHostPathOnce(p string) (string, error) {
	real, err := filepath.EvalSymlinks(p)
	if err == nil {
		return real, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	// Cut the raw path, not a cleaned one: cleaning takes ".." before the
	// link it follows is resolved.
	parts := strings.Split(p, "/")
	for n := len(parts) - 1; n >= 1; n-- {
		head := strings.Join(parts[:n], "/")
		if head == "" {
			head = "/"
		}
		real, err := filepath.EvalSymlinks(head)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		var tail []string
		for _, c := range parts[n:] {
			switch c {
			case "", ".":
			case "..":
				return "", errors.New(`".." after a part that does not exist`)
			default:
				tail = append(tail, c)
			}
		}
		if len(tail) > 0 {
			if fi, err := os.Lstat(filepath.Join(real, tail[0])); err == nil {
				if fi.Mode()&fs.ModeSymlink == 0 {
					return "", errAppeared
				}
				return "", fmt.Errorf("%s is a dangling symbolic link", filepath.Join(real, tail[0]))
			}
		}
		return filepath.Join(append([]string{real}, tail...)...), nil
	}
	return "", err
}

// volumeSource is the host source of a -v spec: "" for an anonymous
// volume (a spec that is only the container path).
func volumeSource(spec string) string {
	src, _, ok := strings.Cut(spec, ":")
	if !ok {
		return ""
	}
	return src
}

// mountSource is the source of a --mount spec (type=…,source=…,…), ""
// when it names none (tmpfs, anonymous volume).
func mountSource(spec string) string {
	for _, kv := range strings.Split(spec, ",") {
		k, v, _ := strings.Cut(kv, "=")
		if k = strings.ToLower(strings.TrimSpace(k)); k == "source" || k == "src" {
			return v
		}
	}
	return ""
}
