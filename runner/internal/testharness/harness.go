// Package testharness is the real-podman test harness every e2e test builds
// on: it builds (and caches) a small local test image without any registry,
// sets up a rootless test user with its own podman storage, and runs the
// project's binaries as root or as that user with the test-only
// containers.conf and isolated TEROK_* directories.
//
// Typical use in a TestMain (build tag e2e):
//
//	env, err := testharness.Prepare(ctx)  // idempotent, cached, locked
//	...
//	r := env.Root(t)                      // or env.Rootless(t), or env.Each(t, fn)
//	res := r.Sandbox(ctx, "run", "--shield-bypass", "--name", r.Name("x"), ...)
//
// Nothing here is used by product code; test-only podman settings live in
// test/containers.conf.
package testharness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"terok.dev/sandbox/common/filelock"
)

// Fixed names shared by every e2e test of every component.
const (
	// ImageRepo is the repository of the local test image; the tag is a hash
	// of test/build-image.sh.
	ImageRepo = "localhost/terok-e2e"
	// RootlessUser is the unprivileged host account the rootless tests run as.
	RootlessUser = "terok-e2e"
	// CacheDir keeps the rootfs tarball between runs (rootless imports read it).
	CacheDir = "/var/cache/terok-e2e"
	// lockFile serialises image builds and user setup across test processes.
	lockFile = "/run/lock/terok-e2e-harness.lock"
)

// Env is a prepared e2e environment. It is immutable after Prepare.
type Env struct {
	// RepoRoot is the checkout root (the directory holding go.work).
	RepoRoot string
	// BinDir holds the project's binaries (TEROK_BIN_DIR, else <repo>/bin).
	BinDir string
	// ContainersConf is the absolute path of test/containers.conf.
	ContainersConf string
	// Image is the full reference of the test image (same tag for root and
	// the rootless user).
	Image string
	// User is the rootless test account.
	User User
}

// SkipReason says why e2e tests cannot run on this machine, or "" if they
// can: they need root (to set up the rootless user) and podman.
func SkipReason() string {
	if os.Geteuid() != 0 {
		return "e2e tests need root (they set up a rootless test user and run rootful podman); run `sudo make e2e`"
	}
	if _, err := exec.LookPath("podman"); err != nil {
		return "e2e tests need podman; run scripts/install-deps.sh"
	}
	return ""
}

// Prepare finds the checkout and binaries, builds or reuses the test image,
// and sets up the rootless user with the image in its storage. It is safe to
// call from several test processes at once (a file lock serialises them) and
// cheap when everything is cached.
func Prepare(ctx context.Context) (*Env, error) {
	if r := SkipReason(); r != "" {
		return nil, errors.New(r)
	}
	root, err := FindRepoRoot()
	if err != nil {
		return nil, err
	}
	e := &Env{
		RepoRoot:       root,
		BinDir:         os.Getenv("TEROK_BIN_DIR"),
		ContainersConf: filepath.Join(root, "test", "containers.conf"),
	}
	if e.BinDir == "" {
		e.BinDir = filepath.Join(root, "bin")
	}
	if e.BinDir, err = filepath.Abs(e.BinDir); err != nil {
		return nil, fmt.Errorf("TEROK_BIN_DIR: %w", err)
	}
	if _, err := os.Stat(e.ContainersConf); err != nil {
		return nil, fmt.Errorf("test containers.conf: %w", err)
	}

	if err := os.MkdirAll(filepath.Dir(lockFile), 0o755); err != nil {
		return nil, fmt.Errorf("harness lock dir: %w", err)
	}
	lk, err := filelock.Exclusive(lockFile)
	if err != nil {
		return nil, fmt.Errorf("harness lock: %w", err)
	}
	defer lk.Close()

	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	tarball, tag, err := e.ensureRootfs(ctx)
	if err != nil {
		return nil, err
	}
	e.Image = ImageRepo + ":" + tag
	if err := e.ensureImage(ctx, nil, tarball); err != nil {
		return nil, fmt.Errorf("import test image for root: %w", err)
	}
	if e.User, err = ensureUser(ctx); err != nil {
		return nil, fmt.Errorf("rootless test user: %w", err)
	}
	if err := e.ensureImage(ctx, &e.User, tarball); err != nil {
		return nil, fmt.Errorf("import test image for %s: %w", RootlessUser, err)
	}
	return e, nil
}

// Bin returns the path of one of the project's binaries, or an error naming
// what to build.
func (e *Env) Bin(name string) (string, error) {
	p := filepath.Join(e.BinDir, name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("binary %s not found in %s (run `make build` or set TEROK_BIN_DIR): %w", name, e.BinDir, err)
	}
	return p, nil
}

// FindRepoRoot walks up from the working directory to the directory holding
// go.work.
func FindRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.work not found above the working directory; run the tests inside the checkout")
		}
		dir = parent
	}
}
