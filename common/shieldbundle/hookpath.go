package shieldbundle

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
)

// DescriptorHookPath returns the hook.path of a hook descriptor (the
// executable podman runs), so a check can ask the installed hook itself
// rather than guess where it lives.
func DescriptorHookPath(data []byte) (string, error) {
	var d struct {
		Hook struct {
			Path string `json:"path"`
		} `json:"hook"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		return "", fmt.Errorf("hook descriptor is not valid JSON: %w", err)
	}
	if d.Hook.Path == "" {
		return "", errors.New("hook descriptor has no hook.path")
	}
	if !filepath.IsAbs(d.Hook.Path) {
		return "", fmt.Errorf("hook descriptor: hook.path must be absolute: '%s'", d.Hook.Path)
	}
	return filepath.Clean(d.Hook.Path), nil
}

// CheckHookBinary makes sure the executable a descriptor will name can be
// changed by nobody podman's caller does not already trust
// (docs/install.md, The OCI hook): podman runs it for every shielded
// container, as root for rootful ones, so whoever can replace it owns those
// containers' firewall. path is resolved through symlinks; the file must be
// a regular executable, and it and every directory above it must be owned
// by one of owners and writable neither by group nor by others. A
// directory writable by others with the sticky bit (/tmp) is accepted:
// others cannot rename or remove an entry they do not own there. It returns
// the resolved path, which is what the descriptor should name.
func CheckHookBinary(path string, owners []int) (string, error) {
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("hook executable path must be absolute: '%s'", path)
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", fmt.Errorf("resolve hook executable %s: %w", path, err)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", fmt.Errorf("hook executable: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("hook executable %s is not an executable regular file", real)
	}
	for p := real; ; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil {
			return "", fmt.Errorf("hook executable: %w", err)
		}
		if err := trustedEntry(p, st, owners, p == real); err != nil {
			return "", err
		}
		if p == "/" {
			return real, nil
		}
	}
}

func trustedEntry(p string, st os.FileInfo, owners []int, isFile bool) error {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("cannot read the owner of %s", p)
	}
	if !slices.Contains(owners, int(sys.Uid)) {
		return fmt.Errorf("refusing hook executable: %s is owned by uid %d, not by %s; install the hook as that user (e.g. make install PREFIX=/usr/local as root)", p, sys.Uid, ownerList(owners))
	}
	perm := st.Mode().Perm()
	if !isFile && st.Mode()&os.ModeSticky != 0 {
		return nil
	}
	switch {
	case perm&0o020 != 0:
		return fmt.Errorf("refusing hook executable: %s is writable by its group (mode %04o); run chmod g-w %s", p, perm, p)
	case perm&0o002 != 0:
		return fmt.Errorf("refusing hook executable: %s is writable by others (mode %04o); run chmod o-w %s", p, perm, p)
	}
	return nil
}

func ownerList(owners []int) string {
	switch len(owners) {
	case 0:
		return "anyone trusted"
	case 1:
		return fmt.Sprintf("uid %d", owners[0])
	}
	s := fmt.Sprintf("uid %d", owners[0])
	for _, o := range owners[1:] {
		s += fmt.Sprintf(" or %d", o)
	}
	return s
}
