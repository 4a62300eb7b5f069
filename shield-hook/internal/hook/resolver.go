package hook

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"terok.dev/sandbox/common/names"
	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/shield-hook/internal/nflog"
	"terok.dev/sandbox/shield-hook/internal/nsexec"
	"terok.dev/sandbox/shield-hook/internal/resolver"
)

// startResolver starts the container's resolver (docs/shield-resolver.md,
// Lifetime): this executable as `terok-shield-hook resolver
// --state-dir=<dir>`, forked from a thread inside the container netns so
// that every socket it ever opens is in that namespace, in its own
// session with stdio on /dev/null, holding a pidfd of the container's init
// (its exit ends the resolver), a route socket in the host's namespace (to
// list the host's addresses) and the DNS listeners bound here (bindDNS).
// The caller has set loopback up. It returns once the child is forked and
// resolver.pid names it, without waiting for the child's own start: the
// listeners already queue queries, and the child reports the outcome in
// resolver.ready, which the runner's post-start verification requires.
// What the hook can check cheaply itself (the upstream forwarder) fails
// the hook as before.
func startResolver(ns *nsexec.NS, dir string, initPID int, ann map[string]string) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("start resolver: find the hook executable: %w", err)
	}
	if filepath.Base(exe) != shieldbundle.HookBinary {
		// The identity check (shieldbundle.IsOurResolver) would never
		// recognise it, so nothing could signal or stop it.
		return fmt.Errorf("start resolver: the hook executable %s is not named %s", exe, shieldbundle.HookBinary)
	}
	// The child would give up on the same file; found here, the
	// container does not start at all.
	if up, err := shieldbundle.ReadUpstreamDNS(dir); err != nil || up == "" {
		if err == nil {
			err = fmt.Errorf("%s missing: the resolver has no upstream forwarder", filepath.Join(dir, shieldbundle.FileUpstreamDNS))
		}
		return fmt.Errorf("start resolver: %w", err)
	}
	pidPath := filepath.Join(dir, shieldbundle.FileResolverPID)
	// A resolver of an earlier start of this container (restart without
	// poststop) is stopped, and its files forgotten, first.
	stopResolver(dir, 2*time.Second)
	for _, f := range []string{pidPath, filepath.Join(dir, shieldbundle.FileResolverReady)} {
		if err := shieldbundle.RemoveIfExists(f); err != nil {
			return err
		}
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
	var udp, tcp, nlf *os.File
	if err := ns.Do(func() (err error) {
		if udp, tcp, err = bindDNS(); err != nil || !refusedLogOn(ann) {
			return err
		}
		// The NFLOG group is bound here too, so that what the container
		// sends before the resolver reads is queued, not unlogged. A
		// kernel without NFLOG: the resolver tries itself and logs why.
		if nl, err := nflog.Listen(ruleset.NFLogGroup); err == nil {
			nlf, err = nl.File()
			_ = nl.Close()
			if err != nil {
				nlf = nil
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("start resolver: %w", err)
	}
	defer udp.Close()
	defer tcp.Close()
	files := []*os.File{initFile, routeFile, udp, tcp} // fds 3-6 (resolver.FdInit, FdHostRoute, FdUDP, FdTCP)
	if nlf != nil {
		defer nlf.Close()
		files = append(files, nlf) // fd 7 (resolver.FdNFLog)
	}
	cmd := &exec.Cmd{
		Path:        exe,
		Args:        append([]string{exe}, shieldbundle.ResolverArgs(dir)...),
		Dir:         "/",
		Env:         resolverEnv(ann),
		ExtraFiles:  files,
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	// A reload (SIGHUP) or resolve request (SIGUSR1) may now arrive
	// before the child has registered its handlers; SIGHUP's default
	// action would kill it. Ignored here, they are ignored in the child
	// across exec until it asks for them (os/signal keeps an inherited
	// SIG_IGN until Notify), and a request that early loses nothing: the
	// child reads the allowlist and markers after registering.
	signal.Ignore(syscall.SIGHUP, shieldbundle.ResolveSignal)
	// The forking thread's privileges are narrowed first, so that the
	// resolver starts with CAP_NET_ADMIN alone (resolver.NarrowForkThread).
	if err := ns.Do(func() error { resolver.NarrowForkThread(); return cmd.Start() }); err != nil {
		return fmt.Errorf("start resolver: %w", err)
	}
	if err := writeRuntimeFile(pidPath, strconv.Itoa(cmd.Process.Pid)+"\n"); err != nil {
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
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
	if !refusedLogOn(ann) {
		env = append(env, resolver.EnvRefusedLog+"=off")
	}
	return env
}

// refusedLogOn reports whether the container's refused-traffic records
// are on: unless its audit log is explicitly off.
func refusedLogOn(ann map[string]string) bool {
	on, err := strconv.ParseBool(ann[shieldbundle.AnnAuditEnabled])
	return err != nil || on
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
