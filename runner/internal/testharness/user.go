package testharness

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// User is the rootless test account.
type User struct {
	Name       string
	UID, GID   int
	Home       string
	RuntimeDir string // XDG_RUNTIME_DIR, owned by the user, 0700
}

// subidCount is the size of the subordinate id range rootless podman needs.
const subidCount = 65536

// ensureUser creates the rootless test user (idempotently) with subuid and
// subgid ranges, a runtime dir and access to /dev/net/tun (slirp4netns).
// Caller holds the harness lock.
func ensureUser(ctx context.Context) (User, error) {
	if _, err := user.Lookup(RootlessUser); err != nil {
		out, err := exec.CommandContext(ctx, "useradd", "-m", "-s", "/bin/sh", "-c", "terok-sandbox e2e tests", RootlessUser).CombinedOutput()
		if err != nil {
			return User{}, fmt.Errorf("useradd %s: %w: %s", RootlessUser, err, out)
		}
	}
	pw, err := user.Lookup(RootlessUser)
	if err != nil {
		return User{}, err
	}
	u := User{Name: pw.Username, Home: pw.HomeDir}
	if u.UID, err = strconv.Atoi(pw.Uid); err != nil {
		return User{}, err
	}
	if u.GID, err = strconv.Atoi(pw.Gid); err != nil {
		return User{}, err
	}
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		if err := ensureSubid(f, u.Name); err != nil {
			return User{}, err
		}
	}
	// slirp4netns opens /dev/net/tun inside the rootless user namespace.
	if err := os.Chmod("/dev/net/tun", 0o666); err != nil {
		return User{}, fmt.Errorf("chmod /dev/net/tun: %w", err)
	}
	u.RuntimeDir = filepath.Join("/run/user", strconv.Itoa(u.UID))
	if err := os.MkdirAll(u.RuntimeDir, 0o700); err != nil {
		return User{}, fmt.Errorf("runtime dir: %w", err)
	}
	if err := os.Chown(u.RuntimeDir, u.UID, u.GID); err != nil {
		return User{}, fmt.Errorf("runtime dir: %w", err)
	}
	if err := os.Chmod(u.RuntimeDir, 0o700); err != nil {
		return User{}, fmt.Errorf("runtime dir: %w", err)
	}
	return u, nil
}

// ensureSubid gives name a range in the subordinate id file unless it has
// one, placed after every existing range so none overlap.
func ensureSubid(path, name string) error {
	data, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("read %s: %w", path, err)
	}
	start, has := nextSubidStart(data, name)
	if has {
		return nil
	}
	line := fmt.Sprintf("%s:%d:%d\n", name, start, subidCount)
	if len(data) > 0 && data[len(data)-1] != '\n' {
		line = "\n" + line
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	if _, err := f.WriteString(line); err != nil {
		_ = f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// nextSubidStart returns whether name already has a range and otherwise the
// first id after all existing ranges (at least 100000).
func nextSubidStart(data []byte, name string) (start int, has bool) {
	start = 100000
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		parts := strings.Split(strings.TrimSpace(sc.Text()), ":")
		if len(parts) != 3 {
			continue
		}
		if parts[0] == name {
			return 0, true
		}
		s, err1 := strconv.Atoi(parts[1])
		n, err2 := strconv.Atoi(parts[2])
		if err1 == nil && err2 == nil && s+n > start {
			start = s + n
		}
	}
	return start, false
}

// baseEnv is the environment of a process run as the user.
func (u User) baseEnv(containersConf string) []string {
	return []string{
		"HOME=" + u.Home,
		"USER=" + u.Name,
		"LOGNAME=" + u.Name,
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"XDG_RUNTIME_DIR=" + u.RuntimeDir,
		"CONTAINERS_CONF=" + containersConf,
		"LANG=C.UTF-8",
	}
}

// apply makes cmd run as the user with the user's base environment
// (replacing cmd.Env) and the home directory as working directory unless one
// is set.
func (u User) apply(cmd *exec.Cmd, containersConf string) {
	cmd.Env = u.baseEnv(containersConf)
	if cmd.Dir == "" {
		cmd.Dir = u.Home
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(u.UID), Gid: uint32(u.GID), Groups: []uint32{}}
}
