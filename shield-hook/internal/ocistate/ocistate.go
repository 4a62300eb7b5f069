// Package ocistate parses the OCI state the runtime writes on the hook's
// stdin and validates the shield annotations it carries (docs/shield-hook.md, Invocation).
// Everything here treats its input as hostile: the state JSON and the state
// directory decide what a process with network-admin rights does next.
package ocistate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"terok.dev/sandbox/common/shieldbundle"
)

// MaxStateSize bounds the state JSON read from stdin. Real states are a few
// kilobytes; annotations are the only variable part.
const MaxStateSize = 4 << 20

// Read reads at most MaxStateSize bytes of state JSON from r.
func Read(r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxStateSize+1))
	if err != nil {
		return nil, fmt.Errorf("bad OCI state: read stdin: %w", err)
	}
	if len(data) > MaxStateSize {
		return nil, fmt.Errorf("bad OCI state: larger than %d bytes", MaxStateSize)
	}
	return data, nil
}

// Parse decodes the OCI state. The error texts are those of docs/shield-hook.md, Invocation
// (without the "terok-shield hook: " prefix the caller adds).
func Parse(data []byte) (*specs.State, error) {
	var raw any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("bad OCI state: %w", err)
	}
	if dec.More() {
		return nil, errors.New("bad OCI state: trailing data after the JSON value")
	}
	obj, ok := raw.(map[string]any)
	if !ok {
		return nil, errors.New("OCI state must be a JSON object")
	}
	if a, present := obj["annotations"]; present && a != nil {
		if _, ok := a.(map[string]any); !ok {
			return nil, errors.New("annotations must be a JSON object")
		}
	}
	var st specs.State
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("bad OCI state: %w", err)
	}
	if st.Pid < 0 {
		return nil, fmt.Errorf("bad OCI state: negative pid %d", st.Pid)
	}
	return &st, nil
}

// StateDir validates the terok.shield.state_dir annotation and returns the
// directory with symlinks resolved. It must be absolute, an existing
// directory, owned by the hook's effective user (or root), and neither group-
// nor world-writable: anyone who can write there could plant rules that the
// hook applies with network-admin rights.
func StateDir(annotations map[string]string) (string, error) {
	v := annotations[shieldbundle.AnnStateDir]
	if v == "" {
		return "", errors.New("missing state_dir annotation")
	}
	if !filepath.IsAbs(v) {
		return "", fmt.Errorf("invalid state_dir: state_dir must be absolute: '%s'", v)
	}
	resolved, err := filepath.EvalSymlinks(v)
	if err != nil {
		return "", fmt.Errorf("invalid state_dir: %w", err)
	}
	if err := CheckPrivateDir(resolved); err != nil {
		return "", fmt.Errorf("invalid state_dir: %w", err)
	}
	return resolved, nil
}

// CheckPrivateDir checks that dir is a directory that only its owner (the
// hook's effective user, or root) can modify.
func CheckPrivateDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("'%s' is not a directory", dir)
	}
	return checkOwner(dir, fi)
}

func checkOwner(path string, fi os.FileInfo) error {
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("'%s' is group- or world-writable (mode %04o); run the pre-start step again or chmod 0700 it", path, fi.Mode().Perm())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if euid := uint32(os.Geteuid()); st.Uid != euid && st.Uid != 0 {
			return fmt.Errorf("'%s' is owned by uid %d, not by the hook's uid %d or root", path, st.Uid, euid)
		}
	}
	return nil
}

// ReadPrivateFile reads a regular file of the state directory without
// following a symlink, refusing files others can modify, and at most max
// bytes.
func ReadPrivateFile(path string, max int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("'%s' is not a regular file", path)
	}
	if err := checkOwner(path, fi); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("'%s' is larger than %d bytes", path, max)
	}
	return data, nil
}

// LegacyBundleVersion is the bundle version terok-shield 0.6.5 wrote; the
// hook still starts such a bundle (docs/shield-hook.md, "Bundles of
// terok-shield 0.6.5").
const LegacyBundleVersion = 4

// IsLegacyVersion reports whether the annotation names exactly
// LegacyBundleVersion.
func IsLegacyVersion(annotations map[string]string) bool {
	return annotations[shieldbundle.AnnVersion] == strconv.Itoa(LegacyBundleVersion)
}

// CheckVersion compares the terok.shield.version annotation with the
// compiled-in bundle version.
func CheckVersion(annotations map[string]string) error {
	v := annotations[shieldbundle.AnnVersion]
	if n, err := strconv.Atoi(v); err != nil || n != shieldbundle.BundleVersion || v != strconv.Itoa(n) {
		//lint:ignore ST1005 message text fixed by docs/formats.md, Bundle version
		return fmt.Errorf("bundle version '%s' != %d. Re-run the pre-start step.", v, shieldbundle.BundleVersion)
	}
	return nil
}
