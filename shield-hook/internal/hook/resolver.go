package hook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"terok.dev/sandbox/common/names"
	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/shield-hook/internal/nsexec"
	"terok.dev/sandbox/shield-hook/internal/resolver"
)

// resolverReadyWait bounds the resolver's start (read its files, open its
// netlink sockets, adopt the listeners bindDNS made): a few milliseconds
// normally.
const resolverReadyWait = 2 * time.Second

// startResolver starts the container's resolver (docs/shield-resolver.md,
// Lifetime): this executable as `terok-shield-hook resolver
// --state-dir=<dir>`, forked from a thread inside the container netns so
// that every socket it ever opens is in that namespace, in its own
// session with stdio on /dev/null, holding a pidfd of the container's init
// (its exit ends the resolver), the write end of a readiness pipe, a
// route socket in the host's namespace (to list the host's addresses) and
// the DNS listeners bound here (bindDNS). The
// caller has set loopback up. It returns once the resolver reported ready
// and resolver.pid names it; on any failure the child is killed.
func startResolver(ctx context.Context, ns *nsexec.NS, dir string, initPID int, ann map[string]string) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("start resolver: find the hook executable: %w", err)
	}
	if filepath.Base(exe) != shieldbundle.HookBinary {
		// The identity check (shieldbundle.IsOurResolver) would never
		// recognise it, so nothing could signal or stop it.
		return fmt.Errorf("start resolver: the hook executable %s is not named %s", exe, shieldbundle.HookBinary)
	}
	pidPath := filepath.Join(dir, shieldbundle.FileResolverPID)
	// A resolver of an earlier start of this container (restart without
	// poststop) is stopped, and its file forgotten, first.
	stopResolver(dir, 2*time.Second)
	if err := shieldbundle.RemoveIfExists(pidPath); err != nil {
		return err
	}
	pidfd, err := unix.PidfdOpen(initPID, 0)
	if err != nil {
		return fmt.Errorf("start resolver: pidfd of the container's init %d: %w", initPID, err)
	}
	initFile := os.NewFile(uintptr(pidfd), "container-init-pidfd")
	defer initFile.Close()
	// Created here, in the host's network namespace (only the locked
	// threads of nsexec are in the container's): the resolver lists the
	// host's addresses through it and never learns one of them.
	rfd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("start resolver: host route socket: %w", err)
	}
	routeFile := os.NewFile(uintptr(rfd), "host-route")
	defer routeFile.Close()
	var udp, tcp *os.File
	if err := ns.Do(func() (err error) { udp, tcp, err = bindDNS(); return err }); err != nil {
		return fmt.Errorf("start resolver: %w", err)
	}
	defer udp.Close()
	defer tcp.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("start resolver: readiness pipe: %w", err)
	}
	defer pr.Close()
	cmd := &exec.Cmd{
		Path:        exe,
		Args:        append([]string{exe}, shieldbundle.ResolverArgs(dir)...),
		Dir:         "/",
		Env:         resolverEnv(ann),
		ExtraFiles:  []*os.File{initFile, pw, routeFile, udp, tcp}, // fds 3-7 (resolver.FdInit, FdReady, FdHostRoute, FdUDP, FdTCP)
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	err = ns.Do(cmd.Start)
	_ = pw.Close()
	if err != nil {
		return fmt.Errorf("start resolver: %w", err)
	}
	kill := func() {
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
	}
	line, err := readReady(ctx, pr)
	if err != nil {
		kill()
		return fmt.Errorf("start resolver: %w (see %s)", err, filepath.Join(dir, shieldbundle.FileDNSLog))
	}
	if line != resolver.ReadyOK {
		kill()
		return fmt.Errorf("start resolver: %s", bytes.TrimSpace([]byte(line)))
	}
	if err := writeRuntimeFile(pidPath, strconv.Itoa(cmd.Process.Pid)+"\n"); err != nil {
		kill()
		return err
	}
	// Not waited for: it outlives the hook (its parent becomes the
	// runtime's subreaper) until the container's init exits.
	return cmd.Process.Release()
}

// bindDNS binds the resolver's listeners, UDP and TCP on 127.0.0.1:53,
// in the calling thread's network namespace (the container's, under
// ns.Do). The hook binds them rather than the resolver so that they exist
// the moment the child is forked: a query is queued until the resolver
// reads it, never refused by a closed port. Plain sockets, not net
// listeners: they are only handed on, and the resolver adopts them.
func bindDNS() (udp, tcp *os.File, err error) {
	addr := &unix.SockaddrInet4{Port: 53, Addr: [4]byte{127, 0, 0, 1}}
	ufd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("udp socket: %w", err)
	}
	udp = os.NewFile(uintptr(ufd), "dns-udp")
	if err := unix.Bind(ufd, addr); err != nil {
		_ = udp.Close()
		return nil, nil, fmt.Errorf("bind 127.0.0.1:53/udp: %w", err)
	}
	tfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		_ = udp.Close()
		return nil, nil, fmt.Errorf("tcp socket: %w", err)
	}
	tcp = os.NewFile(uintptr(tfd), "dns-tcp")
	fail := func(what string, err error) (*os.File, *os.File, error) {
		_ = udp.Close()
		_ = tcp.Close()
		return nil, nil, fmt.Errorf("%s 127.0.0.1:53/tcp: %w", what, err)
	}
	// As net.Listen does: a restarted container's resolver can bind while
	// the previous one's connections linger in TIME_WAIT.
	if err := unix.SetsockoptInt(tfd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fail("SO_REUSEADDR on", err)
	}
	if err := unix.Bind(tfd, addr); err != nil {
		return fail("bind", err)
	}
	if err := unix.Listen(tfd, unix.SOMAXCONN); err != nil {
		return fail("listen on", err)
	}
	return udp, tcp, nil
}

// resolverEnv is the hook's environment plus what the resolver's
// refused-traffic records need (docs/shield-resolver.md, Refused traffic):
// the container's name, and "off" when its audit log is off. Environment,
// not arguments: the identity check wants the argv exactly.
func resolverEnv(ann map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !ownEnv(kv) {
			env = append(env, kv)
		}
	}
	env = append(env, resolver.EnvContainer+"="+ann[shieldbundle.AnnName])
	// The runner checked both by the id rules of common/names; the hook
	// checks again (an annotation is anyone's podman argument) and drops
	// a value that fails rather than failing the start over a label.
	if p := ann[shieldbundle.AnnProject]; p != "" && names.ValidateProjectID(p) == nil {
		env = append(env, resolver.EnvProject+"="+p)
	}
	if t := ann[shieldbundle.AnnTask]; t != "" && names.ValidateTaskID(t) == nil {
		env = append(env, resolver.EnvTask+"="+t)
	}
	if on, err := strconv.ParseBool(ann[shieldbundle.AnnAuditEnabled]); err == nil && !on {
		env = append(env, resolver.EnvRefusedLog+"=off")
	}
	return env
}

// ownEnv reports a variable resolverEnv sets itself (an inherited value
// must not stand in for the container's).
func ownEnv(kv string) bool {
	for _, k := range []string{resolver.EnvContainer, resolver.EnvProject, resolver.EnvTask, resolver.EnvRefusedLog} {
		if strings.HasPrefix(kv, k+"=") {
			return true
		}
	}
	return false
}

// readReady reads the resolver's readiness line, bounded in time and size.
func readReady(ctx context.Context, pr *os.File) (string, error) {
	deadline := time.Now().Add(resolverReadyWait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := pr.SetReadDeadline(deadline); err != nil {
		return "", err
	}
	var buf [512]byte
	n := 0
	for n < len(buf) {
		m, err := pr.Read(buf[n:])
		n += m
		if i := bytes.IndexByte(buf[:n], '\n'); i >= 0 {
			return string(buf[:i+1]), nil
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return "", fmt.Errorf("not ready within %s", resolverReadyWait)
		}
		if errors.Is(err, io.EOF) {
			return "", errors.New("exited before it was ready")
		}
		if err != nil {
			return "", err
		}
	}
	return string(buf[:n]), nil
}

// closeResolverMarker removes a resolver.open left from a `shield down`
// before the container restarted: createRuntime applies the enforcing
// table, and the new resolver must enforce with it. The removal is
// audited (shield_up, as the shield is up again) when the container's
// audit log is on; an audit failure does not fail the hook, a marker that
// cannot be removed does.
func closeResolverMarker(dir string, ann map[string]string) error {
	path := filepath.Join(dir, shieldbundle.FileResolverOpen)
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := shieldbundle.RemoveIfExists(path); err != nil {
		return err
	}
	if on, _ := strconv.ParseBool(ann[shieldbundle.AnnAuditEnabled]); !on || ann[shieldbundle.AnnName] == "" {
		return nil
	}
	// A warning only (AppendAudit's contract); the hook has no channel
	// for one that the runtime shows, and the marker is gone either way.
	_ = shieldbundle.AppendAudit(dir, shieldbundle.Event{
		Container: ann[shieldbundle.AnnName],
		Action:    shieldbundle.ActionShieldUp,
		Detail:    "container restarted: resolver.open of the earlier shield down removed",
	})
	return nil
}

// stopResolver stops the container's resolver named by resolver.pid, if
// it passes the identity check (stopPIDFile).
func stopResolver(dir string, wait time.Duration) {
	stopPIDFile(filepath.Join(dir, shieldbundle.FileResolverPID), func(pid int) bool { return shieldbundle.IsOurResolver(pid, dir) }, wait)
}
