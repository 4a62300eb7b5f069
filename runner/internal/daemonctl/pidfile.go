package daemonctl

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ReadPID parses a PID file (decimal, surrounding whitespace ignored).
func ReadPID(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("PID file %s does not hold a process id", path)
	}
	return pid, nil
}

// Owned is the identity check of docs/gate.md, Operating it: the process's
// cmdline has at least two arguments, one of them exactly
// --pid-file=<pidFile>, and (when exeBase is set) argv[0]'s base name is
// exeBase. Any read error means "not ours".
func Owned(pid int, pidFile, exeBase string) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	data = bytes.TrimSuffix(data, []byte{0})
	args := strings.Split(string(data), "\x00")
	if len(args) < 2 {
		return false
	}
	if exeBase != "" && filepath.Base(args[0]) != exeBase {
		return false
	}
	want := "--pid-file=" + pidFile
	for _, a := range args[1:] {
		if a == want {
			return true
		}
	}
	return false
}

// Running reports the PID of our live daemon behind pidFile, if any.
func Running(pidFile, exeBase string) (int, bool) {
	pid, err := ReadPID(pidFile)
	if err != nil || !Owned(pid, pidFile, exeBase) {
		return 0, false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return 0, false
	}
	return pid, true
}

// Stop sends SIGTERM to our daemon behind pidFile and removes the PID file.
// Parse errors, vanished processes and permission errors are ignored; a PID
// that fails the identity check is never signalled.
func Stop(pidFile, exeBase string) (stopped bool) {
	defer os.Remove(pidFile)
	pid, err := ReadPID(pidFile)
	if err != nil || !Owned(pid, pidFile, exeBase) {
		return false
	}
	return syscall.Kill(pid, syscall.SIGTERM) == nil
}
