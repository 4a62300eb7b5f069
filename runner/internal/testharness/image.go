package testharness

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// imageChanges are the `podman import --change` settings of the test image.
func imageChanges() []string {
	return []string{
		`CMD ["/bin/sh"]`,
		`ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
	}
}

// RecipeHash is the image tag: the first 16 hex digits of the SHA-256 of
// test/build-image.sh and the import changes. A changed recipe gets a new
// tag, so a stale image is never reused.
func RecipeHash(script []byte) string {
	h := sha256.New()
	h.Write(script)
	for _, c := range imageChanges() {
		h.Write([]byte{0})
		h.Write([]byte(c))
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// ensureRootfs builds the rootfs tarball unless the cached one for the
// current recipe exists. Caller holds the harness lock.
func (e *Env) ensureRootfs(ctx context.Context) (tarball, tag string, err error) {
	script := filepath.Join(e.RepoRoot, "test", "build-image.sh")
	data, err := os.ReadFile(script)
	if err != nil {
		return "", "", fmt.Errorf("image recipe: %w", err)
	}
	tag = RecipeHash(data)
	if err := os.MkdirAll(CacheDir, 0o755); err != nil {
		return "", "", fmt.Errorf("image cache dir: %w", err)
	}
	if err := os.Chmod(CacheDir, 0o755); err != nil {
		return "", "", fmt.Errorf("image cache dir: %w", err)
	}
	tarball = filepath.Join(CacheDir, "rootfs-"+tag+".tar")
	// Tarballs of older recipes are dead weight (their images stay until
	// `podman image prune`; they are cheap and may serve older checkouts).
	if old, err := filepath.Glob(filepath.Join(CacheDir, "rootfs-*.tar")); err == nil {
		for _, f := range old {
			if f != tarball {
				_ = os.Remove(f)
			}
		}
	}
	if _, err := os.Stat(tarball); err == nil {
		return tarball, tag, nil
	}
	cmd := exec.CommandContext(ctx, "bash", script, tarball)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("build test image rootfs (%s): %w\n%s", script, err, out)
	}
	if err := os.Chmod(tarball, 0o644); err != nil {
		return "", "", fmt.Errorf("test image rootfs: %w", err)
	}
	return tarball, tag, nil
}

// ensureImage imports the tarball into root's storage (u == nil) or the
// rootless user's, unless the tag already exists there.
func (e *Env) ensureImage(ctx context.Context, u *User, tarball string) error {
	run := func(args ...string) *exec.Cmd {
		cmd := exec.CommandContext(ctx, "podman", args...)
		cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+e.ContainersConf)
		if u != nil {
			u.apply(cmd, e.ContainersConf)
		}
		return cmd
	}
	if run("image", "exists", e.Image).Run() == nil {
		return nil
	}
	args := []string{"import"}
	for _, c := range imageChanges() {
		args = append(args, "--change", c)
	}
	args = append(args, tarball, e.Image)
	if out, err := run(args...).CombinedOutput(); err != nil {
		return fmt.Errorf("podman %v: %w\n%s", args, err, out)
	}
	return nil
}
