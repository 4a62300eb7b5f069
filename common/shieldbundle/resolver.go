package shieldbundle

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ResolverSubcommand is the terok-shield-hook subcommand that runs the
// per-container resolver (docs/shield-resolver.md).
const ResolverSubcommand = "resolver"

// ResolverStateDirArg is the one argument that ties a resolver process to
// its state directory.
func ResolverStateDirArg(stateDir string) string { return "--state-dir=" + stateDir }

// ResolverArgs is the argv after the hook executable that starts the
// per-container resolver of stateDir. The hook starts it with exactly this
// argv, so IsOurResolver can recognise it without substring matching.
func ResolverArgs(stateDir string) []string {
	return []string{ResolverSubcommand, ResolverStateDirArg(stateDir)}
}

// IsOurResolver reports whether pid runs the per-container resolver of
// stateDir: /proc/PID/cmdline is exactly [<path whose base is
// terok-shield-hook>, "resolver", "--state-dir=<stateDir>"]. Anything else
// (another state dir, extra arguments, a recycled PID of an unrelated
// process) is not ours and must never be signalled.
func IsOurResolver(pid int, stateDir string) bool {
	if pid <= 0 || stateDir == "" {
		return false
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(data) == 0 || data[len(data)-1] != 0 {
		return false
	}
	args := strings.Split(string(data[:len(data)-1]), "\x00")
	want := ResolverArgs(stateDir)
	if len(args) != 1+len(want) || filepath.Base(args[0]) != HookBinary {
		return false
	}
	for i, w := range want {
		if args[1+i] != w {
			return false
		}
	}
	return true
}

// ResolverPID returns the PID recorded in stateDir's resolver.pid when it
// names a live resolver of stateDir (IsOurResolver); false otherwise,
// including for a missing, malformed or stale file.
func ResolverPID(stateDir string) (int, bool) {
	pid, err := ReadPIDFile(filepath.Join(stateDir, FileResolverPID))
	if err != nil || pid <= 0 || !IsOurResolver(pid, stateDir) {
		return 0, false
	}
	return pid, true
}

// ResolverReadyOK is the content of resolver.ready once the resolver
// serves; a start that failed writes "error: <why>" instead.
const ResolverReadyOK = "ok"

// WriteResolverReady records the resolver's start outcome (ok, or the
// reason it gave up) in resolver.ready, atomically: a reader sees the old
// state or the whole new one, never half a line.
func WriteResolverReady(stateDir, line string) (err error) {
	path := filepath.Join(stateDir, FileResolverReady)
	f, err := os.CreateTemp(stateDir, "."+FileResolverReady+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if _, err = f.WriteString(strings.ReplaceAll(line, "\n", " ") + "\n"); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// ReadResolverReady returns resolver.ready's line ("" while the file does
// not exist: the resolver is still starting).
func ReadResolverReady(stateDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(stateDir, FileResolverReady))
	if os.IsNotExist(err) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// ApplySubcommand is the terok-shield-hook subcommand that applies a
// ruleset read from stdin to the network namespace it runs in, the way
// the createRuntime hook does (netlink builder, nft as the fallback,
// read-back verification): `terok-shield-hook apply-ruleset --mode=MODE`.
// The runner's `shield up` runs it inside the container's netns for an
// interactive bundle, whose queue rules only the netlink builder can
// write on a kernel without nft_queue (docs/shield.md, Interactive mode:
// the queue rule).
const ApplySubcommand = "apply-ruleset"

// ApplyModeArg is the argument naming the shield mode whose checks verify
// the applied table.
func ApplyModeArg(mode string) string { return "--mode=" + mode }
