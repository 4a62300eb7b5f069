package seccomp

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"terok.dev/sandbox/common/atomicfile"
)

// FileName is the profile's name in the sandbox config root: root's
// /etc/terok/sandbox/seccomp.json, a user's
// ~/.config/terok/sandbox/seccomp.json (or $TEROK_SANDBOX_CONFIG_DIR).
const FileName = "seccomp.json"

// Path is where the runner finds the profile for a configuration root.
func Path(configDir string) string { return filepath.Join(configDir, FileName) }

// PodmanDefaults are podman's default profiles in the order podman itself
// looks for them: the administrator's copy first, then the packaged one.
var PodmanDefaults = []string{"/etc/containers/seccomp.json", "/usr/share/containers/seccomp.json"}

// FindPodmanDefault returns the first of PodmanDefaults that exists.
func FindPodmanDefault() (string, error) {
	for _, p := range PodmanDefaults {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("podman's default seccomp profile is missing (looked for %v); install containers-common (apt-get install golang-github-containers-common) and run the setup again", PodmanDefaults)
}

// Build reads podman's default profile at src and returns the sandbox's,
// verified.
func Build(src string) ([]byte, error) {
	in, err := os.ReadFile(src)
	if err != nil {
		return nil, fmt.Errorf("read podman's seccomp profile: %w", err)
	}
	out, err := Transform(in)
	if err != nil {
		return nil, fmt.Errorf("podman's seccomp profile %s: %w", src, err)
	}
	if err := Verify(out); err != nil {
		return nil, fmt.Errorf("the profile generated from %s does not hold: %w", src, err)
	}
	return out, nil
}

// Install builds the profile from src and writes it to dst atomically, mode
// 0644. The directory is created (0755) when missing; one that others may
// write to is refused, since whoever can replace the file decides what
// every task may do.
func Install(src, dst string) error {
	data, err := Build(src)
	if err != nil {
		return err
	}
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err := safeDir(dir, os.Geteuid()); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(dst, data, 0o644); err != nil {
		return fmt.Errorf("write seccomp profile %s: %w", dst, err)
	}
	// The umask may have narrowed the mode; podman of a rootless user must
	// read it, and nothing else needs to.
	if err := os.Chmod(dst, 0o644); err != nil {
		return fmt.Errorf("chmod seccomp profile %s: %w", dst, err)
	}
	return nil
}

// SetupHint is how to (re)create the profile.
const SetupHint = "run `terok-sandbox shield setup --root` (rootful podman) or `terok-sandbox shield setup --user` (rootless) to generate it from podman's default"

// ErrMissing is returned by Load when no profile is installed.
var ErrMissing = errors.New("seccomp profile not installed")

// Load checks the profile at path for a launch by euid: a regular file
// (not a link), owned by euid or root, not writable by group or others, in
// a directory of the same kind, and a profile Verify accepts. Every
// failure names the fix.
func Load(path string, euid int) error { return LoadMemo(path, euid, nil) }

// VerifiedMemo remembers a derived fact keyed by the files it depends on
// (podman.InfoCache.Memo, the runner's host-facts cache): valid accepts
// or rejects a cached value, compute derives it on a miss and says
// whether to keep it.
type VerifiedMemo interface {
	Memo(name string, deps []string, valid func(string) bool, compute func() (string, bool)) string
}

// LoadMemo is Load that skips Verify, the ~2-6 ms of a launch spent
// parsing and evaluating the profile, for a content Verify already
// accepted: memo keeps the SHA-256 of the last accepted content per path,
// keyed by this executable (a new build, whose rules may be stricter,
// verifies again). The file is still read and every ownership and mode
// check still runs on every launch; any other content is verified and
// only an accepted one is remembered. nil memo verifies every time.
func LoadMemo(path string, euid int, memo VerifiedMemo) error {
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w at %s: %s", ErrMissing, path, SetupHint)
	}
	if err != nil {
		return fmt.Errorf("seccomp profile %s: %w; %s", path, err, SetupHint)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("seccomp profile %s is not a regular file (%s); remove it and %s", path, st.Mode().Type(), SetupHint)
	}
	if err := safeOwner(path, st, euid); err != nil {
		return err
	}
	if err := safeDir(filepath.Dir(path), euid); err != nil {
		return err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read seccomp profile %s: %w; %s", path, err, SetupHint)
	}
	if err := verifyMemo(data, path, memo); err != nil {
		return fmt.Errorf("seccomp profile %s is not usable: %v; %s", path, err, SetupHint)
	}
	return nil
}

// verifyMemo is Verify(data) through memo (see LoadMemo).
func verifyMemo(data []byte, path string, memo VerifiedMemo) error {
	exe, err := os.Executable()
	if memo == nil || err != nil {
		return Verify(data)
	}
	sum := sha256.Sum256(data)
	digest := hex.EncodeToString(sum[:])
	var verr error
	memo.Memo("seccomp-verified:"+path, []string{exe}, func(v string) bool { return v == digest }, func() (string, bool) {
		verr = Verify(data)
		return digest, verr == nil
	})
	return verr
}

// safeOwner refuses a file or directory others could change.
func safeOwner(path string, st fs.FileInfo, euid int) error {
	if st.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s is writable by group or others (mode %04o): whoever can change it decides what tasks may do; chmod go-w %s", path, st.Mode().Perm(), path)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != euid && sys.Uid != 0 {
		return fmt.Errorf("%s is owned by uid %d, not by you (uid %d) or root; remove it and %s", path, sys.Uid, euid, SetupHint)
	}
	return nil
}

func safeDir(dir string, euid int) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("seccomp profile directory %s: %w", dir, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if st.Mode()&os.ModeSticky == 0 {
		if err := safeOwner(dir, st, euid); err != nil {
			return err
		}
	}
	return nil
}

// RootPath is root's profile in the default config root, where a --root
// setup run through sudo puts it (rootful podman is driven by root, whose
// runner reads /etc/terok/sandbox unless TEROK_SANDBOX_CONFIG_DIR says
// otherwise).
const RootPath = "/etc/terok/sandbox/" + FileName
