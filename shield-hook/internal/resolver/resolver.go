// Package resolver is the per-container DNS resolver (tier "resolver",
// docs/shield-resolver.md). The createRuntime hook starts it inside the
// container's network namespace as `terok-shield-hook resolver
// --state-dir=<dir>`; it listens on 127.0.0.1:53 there, forwards only
// allowlisted names (and only the address types) to the upstream forwarder
// from sockets carrying ruleset.ResolverMark, adds the non-special
// addresses of each forwarded answer to the learned sets before replying,
// and answers everything else itself, so that no packet of a refused name
// leaves the namespace. It lives as long as the container's init process.
package resolver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/shield-hook/internal/nflog"
)

// The descriptors the hook passes (exec.Cmd.ExtraFiles order).
const (
	// FdInit is a pidfd of the container's init process: readable once it
	// has exited, which ends the resolver.
	FdInit = 3
	// FdHostRoute is a NETLINK_ROUTE socket in the host's network
	// namespace, to list the host's addresses (hostAddrs).
	FdHostRoute = 4
	// FdUDP and FdTCP are the listeners on 127.0.0.1:53 in the
	// container netns, bound by the hook (docs/shield-resolver.md,
	// Lifetime): a query sent before the resolver reads waits in the
	// socket's queue instead of meeting a closed port.
	FdUDP = 5
	FdTCP = 6
	// FdNFLog, when open, is the NFLOG subscription (Refused traffic)
	// the hook bound in the container netns, so that nothing refused
	// before the resolver reads goes unrecorded.
	FdNFLog = 7
)

// listenAddr is where the resolver serves inside the container netns
// (resolv.conf's nameserver, shieldbundle.ResolvConf).
func listenAddr() netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 53)
}

// Resolver is the state of one running resolver.
type Resolver struct {
	dir string
	mu  sync.Mutex // guards pol, gen and marker
	pol *policy
	gen uint64 // bumped by every reload
	// marker is whether resolver.open was present at the last reload; the
	// policy is open only while it is and the live table is the bypass
	// table (liveBypass).
	marker bool
	// bypass reports whether the live table is the bypass table; a field
	// so that unit tests can stand in for the kernel's table.
	bypass func() (bool, error)
	up     *upstream
	learn  *learner
	host   *hostAddrs
	cache  *answerCache
	log    *boundedLog
	// rate bounds the forwarded queries; nil (unit tests) is unbounded.
	rate *rateLimiter
	// refused writes the refused-traffic records; nil when they are off.
	refused *refusals
	// learning is learn mode (shield.mode): the table lets public
	// destinations through, so the resolver forwards every name, and it
	// records each answered name as seen.
	learning bool
	now      func() time.Time
}

// Main runs the resolver subcommand (args is the whole argv) and returns
// the process exit status.
func Main(ctx context.Context, args []string, stderr io.Writer) int {
	dir, err := parseArgs(args)
	if err == nil && !isPidfd(FdInit) {
		err = errors.New("no pidfd of the container's init on fd 3: the resolver is started by the createRuntime hook")
	}
	if err == nil && !isFd(FdHostRoute) {
		err = errors.New("no host route socket on fd 4: the resolver is started by the createRuntime hook")
	}
	if err == nil {
		// The hook does not wait for the start (docs/shield-resolver.md,
		// Lifetime): its outcome goes to resolver.ready, which the
		// runner's post-start verification reads.
		err = run(ctx, dir, listenAddr(), FdInit, FdHostRoute, func(line string) error {
			return shieldbundle.WriteResolverReady(dir, line)
		})
	}
	if err != nil {
		fmt.Fprintln(stderr, "terok-shield-hook resolver: "+err.Error())
		return 1
	}
	return 0
}

// inheritedListeners adopts the hook's listeners (FdUDP, FdTCP) after
// checking that each is the socket type the resolver serves on and bound
// to listen: a descriptor that is anything else fails the start rather
// than serving somewhere resolv.conf does not point.
func inheritedListeners(listen netip.AddrPort) (*net.UDPConn, *net.TCPListener, error) {
	uf := os.NewFile(FdUDP, "dns-udp")
	tf := os.NewFile(FdTCP, "dns-tcp")
	defer uf.Close()
	defer tf.Close()
	pc, err := net.FilePacketConn(uf)
	if err != nil {
		return nil, nil, fmt.Errorf("listener on fd %d (%s/udp, bound by the hook): %w", FdUDP, listen, err)
	}
	udp, ok := pc.(*net.UDPConn)
	if !ok || !boundTo(udp.LocalAddr(), listen) {
		_ = pc.Close()
		return nil, nil, fmt.Errorf("fd %d is not a UDP socket bound to %s", FdUDP, listen)
	}
	ln, err := net.FileListener(tf)
	if err != nil {
		_ = udp.Close()
		return nil, nil, fmt.Errorf("listener on fd %d (%s/tcp, bound by the hook): %w", FdTCP, listen, err)
	}
	tcp, ok := ln.(*net.TCPListener)
	if !ok || !boundTo(tcp.Addr(), listen) {
		_ = ln.Close()
		_ = udp.Close()
		return nil, nil, fmt.Errorf("fd %d is not a TCP listener bound to %s", FdTCP, listen)
	}
	return udp, tcp, nil
}

// subscribeNFLog adopts the hook's NFLOG subscription (FdNFLog) or, when
// the hook passed none (it could not bind the group), binds it here.
func subscribeNFLog() (*nflog.Conn, error) {
	if !isFd(FdNFLog) {
		return nflog.Listen(ruleset.NFLogGroup)
	}
	return nflog.FromFile(os.NewFile(FdNFLog, "nflog"))
}

// boundTo reports whether a socket's local address is want (IPv4 in its
// plain form).
func boundTo(a net.Addr, want netip.AddrPort) bool {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.UDPAddr:
		ap = a.AddrPort()
	case *net.TCPAddr:
		ap = a.AddrPort()
	default:
		return false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()) == want
}

func parseArgs(args []string) (string, error) {
	if len(args) != 3 || args[1] != shieldbundle.ResolverSubcommand || !strings.HasPrefix(args[2], "--state-dir=") {
		return "", fmt.Errorf("usage: %s resolver --state-dir=DIR (started by the createRuntime hook)", shieldbundle.HookBinary)
	}
	dir := strings.TrimPrefix(args[2], "--state-dir=")
	if !filepath.IsAbs(dir) || filepath.Clean(dir) != dir {
		return "", fmt.Errorf("state dir must be an absolute, clean path: %q", dir)
	}
	return dir, nil
}

func isFd(fd int) bool {
	var st unix.Stat_t
	return unix.Fstat(fd, &st) == nil
}

// isPidfd reports whether fd is a pidfd (its fdinfo has a Pid line).
func isPidfd(fd int) bool {
	b, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(fd))
	return err == nil && strings.Contains(string(b), "\nPid:")
}

// run starts the resolver, reports readiness on ready (or why it could not
// start) and serves until ctx ends, SIGTERM/SIGINT arrives or the process
// behind initFd exits.
func run(ctx context.Context, dir string, listen netip.AddrPort, initFd, hostRouteFd int, ready func(string) error) (err error) {
	readySent := false
	defer func() {
		if !readySent {
			_ = ready("error: " + fmt.Sprint(err))
		}
	}()
	// Signals first: SIGHUP's default action would kill a resolver that
	// gets reloaded right after it reported ready.
	sigc := make(chan os.Signal, 4)
	signal.Notify(sigc, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT, shieldbundle.ResolveSignal)
	defer signal.Stop(sigc)

	r, err := newResolver(dir)
	if err != nil {
		return err
	}
	defer r.close()
	if r.host, err = newHostAddrs(hostRouteFd); err != nil {
		return err
	}
	defer r.host.close()
	if os.Getenv(EnvRefusedLog) != "off" {
		if r.refused, err = newRefusals(dir, RecordID{Container: os.Getenv(EnvContainer), Project: os.Getenv(EnvProject), Task: os.Getenv(EnvTask)}, func(err error) {
			r.log.log(slog.LevelError, "refused-traffic record", slog.String("error", err.Error()))
		}); err != nil {
			return err
		}
		defer r.refused.stop()
		// The group is bound before the capabilities are dropped, like
		// every other socket; the subscription then needs nothing more.
		// A kernel without NFLOG costs the records, not the container's
		// DNS: logged loudly, the resolver serves on.
		if nl, err := subscribeNFLog(); err != nil {
			r.log.log(slog.LevelError, "no refused-traffic records: NFLOG group unavailable", slog.String("error", err.Error()))
		} else {
			defer startReader(nl, r.refused).stop()
		}
	}
	// Interactive mode: the queue is bound and the decider socket made
	// before the capabilities are dropped. Unlike NFLOG this is not
	// optional: without a holder every queued packet is dropped, so a
	// resolver that cannot hold the queue fails the start loudly.
	if mode, err := shieldbundle.ReadMode(dir); err != nil {
		return err
	} else if mode == shieldbundle.ModeInteractive {
		ap, err := openApprover(dir, r.refused, func(err error) {
			r.log.log(slog.LevelError, "interactive approval", slog.String("error", err.Error()))
		}, r.log.log)
		if err != nil {
			return err
		}
		defer ap.stop()
	}
	tw, err := watchTables(r.tablesChanged)
	if err != nil {
		return err
	}
	defer tw.stop()
	initExit, stopWatch, err := watchPidfd(initFd)
	if err != nil {
		return err
	}
	defer stopWatch()
	udp, tcp, err := inheritedListeners(listen)
	if err != nil {
		return err
	}
	// Everything that needs more than CAP_NET_ADMIN is done: the sockets
	// are bound, the netlink sockets (learned sets, table notifications,
	// the host's routes) open.
	if err := dropPrivileges(); err != nil {
		_ = udp.Close()
		_ = tcp.Close()
		return fmt.Errorf("drop privileges: %w", err)
	}
	srv := newServer(r, udp, tcp)
	errc := make(chan error, 2)
	srv.start(errc)
	defer srv.stop()
	defer r.forgetPID()
	if err := ready(shieldbundle.ResolverReadyOK); err != nil {
		return fmt.Errorf("report readiness: %w", err)
	}
	readySent = true
	r.log.log(slog.LevelInfo, "started", slog.String("upstream", r.up.addr.String()))
	rw := startResolveWorker(r)
	defer rw.stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-initExit:
			r.log.log(slog.LevelInfo, "container init exited, stopping")
			return nil
		case err := <-errc:
			r.log.log(slog.LevelError, "serving failed", slog.String("error", err.Error()))
			return err
		case s := <-sigc:
			switch s {
			case syscall.SIGHUP:
				r.reload()
			case shieldbundle.ResolveSignal:
				rw.request()
			default:
				return nil
			}
		}
	}
}

func newResolver(dir string) (*Resolver, error) {
	lg, err := openBoundedLog(filepath.Join(dir, shieldbundle.FileDNSLog), logMaxBytes)
	if err != nil {
		return nil, err
	}
	r := &Resolver{dir: dir, log: lg, cache: newAnswerCache(), now: time.Now, bypass: liveBypass,
		rate: newRateLimiter(forwardRate, forwardBurst, time.Now())}
	up, err := shieldbundle.ReadUpstreamDNS(dir)
	if err == nil && up == "" {
		err = fmt.Errorf("%s missing: the resolver has no upstream forwarder", filepath.Join(dir, shieldbundle.FileUpstreamDNS))
	}
	if err != nil {
		lg.close()
		return nil, err
	}
	ua, err := netip.ParseAddr(up)
	if err != nil {
		lg.close()
		return nil, fmt.Errorf("upstream forwarder %q: %w", up, err)
	}
	r.up = &upstream{addr: netip.AddrPortFrom(ua, 53), mark: ruleset.ResolverMark, timeout: upstreamTimeout, tries: upstreamTries}
	mode, err := shieldbundle.ReadMode(dir)
	if err != nil {
		lg.close()
		return nil, err
	}
	r.learning = mode == shieldbundle.ModeLearn
	domains, marker, err := r.readPolicy()
	if err != nil {
		lg.close()
		return nil, err
	}
	r.marker = marker
	r.pol = newPolicy(domains, r.openWith(marker))
	r.pol.ask = mode == shieldbundle.ModeInteractive
	if r.learn, err = newLearner(); err != nil {
		lg.close()
		return nil, err
	}
	return r, nil
}

func (r *Resolver) close() {
	r.learn.close()
	r.log.close()
}

// readPolicy reads the effective domain list and the resolver.open marker.
func (r *Resolver) readPolicy() ([]string, bool, error) {
	domains, err := shieldbundle.EffectiveDomains(r.dir, func(msg string) {
		r.log.log(slog.LevelWarn, "allowlist", slog.String("warning", msg))
	})
	if err != nil {
		return nil, false, fmt.Errorf("read allowlist: %w", err)
	}
	_, err = os.Lstat(filepath.Join(r.dir, shieldbundle.FileResolverOpen))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, false, fmt.Errorf("check %s: %w", shieldbundle.FileResolverOpen, err)
	}
	return domains, err == nil, nil
}

// reload (SIGHUP) installs the current allowlist and marker, then drops
// learned addresses no allowed name vouches for any more. A list that
// cannot be read keeps the previous one in force.
func (r *Resolver) reload() {
	domains, marker, err := r.readPolicy()
	if err != nil {
		r.log.log(slog.LevelError, "reload failed, previous allowlist kept", slog.String("error", err.Error()))
		return
	}
	open := r.openWith(marker)
	r.mu.Lock()
	r.marker = marker
	r.pol.replace(domains, open)
	r.gen++
	r.mu.Unlock()
	r.cache.flush()
	n, err := r.reloadLearned()
	attrs := []slog.Attr{slog.Int("domains", len(domains)), slog.Bool("open", open), slog.Int("addresses_removed", n)}
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	r.log.log(slog.LevelInfo, "reloaded", attrs...)
}

// reloadLearned brings the learned sets in line with the current policy
// (learner.reload).
func (r *Resolver) reloadLearned() (int, error) {
	r.mu.Lock()
	snapshot := &policy{open: r.pol.open, domains: r.pol.domains}
	r.mu.Unlock()
	return r.learn.reload(snapshot.stillAllowed)
}

// tablesChanged is tableWatch's callback: the cache and the learner's
// record of what the kernel holds are dropped; after a table or set was
// replaced, the addresses still vouched for are put back.
func (r *Resolver) tablesChanged(replaced bool) {
	r.cache.flush()
	r.learn.forget()
	if !replaced {
		return
	}
	// `shield up` replaces the bypass table by the enforcing one: from
	// that moment a leftover resolver.open no longer opens anything.
	r.mu.Lock()
	marker := r.marker
	r.mu.Unlock()
	open := r.openWith(marker)
	r.mu.Lock()
	if r.pol.open != open {
		r.pol.setOpen(open)
		r.gen++
	}
	r.mu.Unlock()
	if _, err := r.reloadLearned(); err != nil {
		r.log.log(slog.LevelWarn, "table replaced, learned addresses not restored", slog.String("error", err.Error()))
	}
}

// openWith decides whether the resolver forwards every name: only while
// the resolver.open marker is present AND the live table is the bypass
// table (docs/shield-resolver.md, Shield down). A marker left behind under
// the enforcing table (a restart after `shield down`, a failed `shield
// up`) would otherwise turn the resolver into an open tunnel that the
// table cannot see. A table that cannot be read counts as enforcing.
func (r *Resolver) openWith(marker bool) bool {
	if r.learning {
		// Learn mode's table lets every public destination through: a
		// closed resolver would only hide the names it is there to
		// record. Quarantine's table refuses the resolver's DNS too.
		return true
	}
	if !marker {
		return false
	}
	bypass, err := r.bypass()
	if err != nil {
		r.log.log(slog.LevelWarn, "resolver.open ignored: live table unreadable", slog.String("error", err.Error()))
		return false
	}
	if !bypass {
		r.log.log(slog.LevelWarn, "resolver.open ignored: the live table enforces")
	}
	return bypass
}

// outputChain is the output chain of the container's table (common/ruleset).
const outputChain = "output"

// liveBypass reads the output chain of the container's table over netlink
// (in the resolver's own netns): policy accept is the bypass table of
// `shield down`, anything else (policy drop, no table) enforces.
func liveBypass() (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("netlink socket: %w", err)
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, fmt.Errorf("list chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table != nil && ch.Table.Name == ruleset.Table && ch.Name == outputChain {
			return ch.Policy != nil && *ch.Policy == nftables.ChainPolicyAccept, nil
		}
	}
	return false, nil
}

// forgetPID removes resolver.pid if it still names this process.
func (r *Resolver) forgetPID() {
	path := filepath.Join(r.dir, shieldbundle.FileResolverPID)
	if pid, err := shieldbundle.ReadPIDFile(path); err == nil && pid == os.Getpid() {
		_ = os.Remove(path)
	}
}

// watchPidfd returns a channel closed when the process behind the pidfd
// exits (the pidfd becomes readable), and a stop function that ends the
// watching goroutine.
func watchPidfd(fd int) (<-chan struct{}, func(), error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, nil, fmt.Errorf("pidfd of the container's init: %w", err)
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, nil, fmt.Errorf("pidfd of the container's init: %w", err)
	}
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(done)
		// The runtime's poller waits for readability between calls; the
		// zero-timeout poll tells an exit from a spurious wake-up.
		err := rc.Read(func(fd uintptr) bool {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, _ := unix.Poll(fds, 0)
			return n > 0
		})
		if err == nil {
			close(exited)
		}
	}()
	return exited, func() { _ = f.Close(); <-done }, nil
}
