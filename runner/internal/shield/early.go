package shield

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"terok.dev/sandbox/common/names"
	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/runner/internal/launch"
)

// Early verification. The post-start check (VerifyStarted) lists the
// shield table in the container's netns, an nsenter+nft exec of ~5 ms,
// after `podman run -d` returned. The same check can run while podman is
// still busy: once the OCI runtime has written the container's pidfile, the
// createRuntime hook has finished (runc writes --pid-file after `create`
// returns, i.e. after the create-time hooks) and the container's init
// process sits in its final network namespace, blocked before exec: none of
// the container's own code has run yet. Podman then still starts the
// container and writes its bookkeeping, which hides most of the listing.
//
// The early result only ever says "passed"; it is used only when podman's
// answer proves it was about the same container: container.id written by
// the hook for this launch equals podman's id, the run root's pidfile for
// that full id names the same PID, and that PID is the same process (its
// start time is unchanged; a process cannot leave its netns without
// CAP_SYS_ADMIN, which the container does not have, and it had not run at
// all when it was checked). Anything else - no event, an unexpected run
// root, a failed or slow listing, a failed verification, a mismatch - falls
// back to the full VerifyStarted, so the early path can only skip work,
// never a check.

// earlyResult is what the watcher proved.
type earlyResult struct {
	short    string // container.id written by the hook during this launch
	userdata string // the run directory whose pidfile named pid
	pid      int
	start    string // the process's start time (/proc/PID/stat field 22)
}

// Pending is a post-start verification begun before podman returned. Its
// goroutine is owned by the Pending: Finish or Stop ends it.
type Pending struct {
	s         *Shield
	container string
	cancel    context.CancelFunc
	listing   chan struct{} // closed when the watcher starts listing
	pid       int           // the PID being listed; set before listing is closed
	done      chan struct{} // closed when the watcher has ended
	res       *earlyResult  // set before done is closed; nil = nothing proved
	// released is closed once the inotify descriptor is closed (see
	// release); nil when no watcher was opened.
	released    chan struct{}
	releaseOnce sync.Once
}

// BeginVerify starts watching the state directory for the container podman
// is about to create. It must be called before podman runs (it notes any
// container.id left by an earlier container of the same task).
func (s *Shield) BeginVerify(ctx context.Context, container string) *Pending {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p := &Pending{s: s, container: container, cancel: cancel, listing: make(chan struct{}), done: make(chan struct{})}
	if s.opts.EUID != 0 {
		// Rootless: until it execs the container's command, runc init is
		// not dumpable, so its namespaces are closed to the user's nsenter
		// (measured: the early listing failed in 12 of 12 launches and
		// only cost CPU). Finish runs the full check after podman.
		close(p.done)
		return p
	}
	dir, err := s.stateDir()
	if err != nil {
		close(p.done)
		return p
	}
	stale := readTrim(filepath.Join(dir, shieldbundle.FileContainerID))
	w, err := newDirWatcher(ctx)
	if err != nil {
		close(p.done)
		return p
	}
	p.released = make(chan struct{})
	go func() {
		defer close(p.done)
		p.res = p.watch(ctx, w, dir, stale)
		p.release(w) // no-op when watch released it already
	}()
	return p
}

// release closes the watcher on a goroutine of its own. Closing an inotify
// descriptor that had watches waits in the kernel for an SRCU grace period
// (the fsnotify mark reaper): 2-12 ms measured here, and it used to sit
// between the end of the listing and Finish, i.e. after podman returned.
// watch releases the watcher as soon as it needs no more events, so the
// wait overlaps the listing and podman's own remaining work. Nothing waits
// for this goroutine but Wait and process exit; it ends by itself once the
// kernel is done.
func (p *Pending) release(w *dirWatcher) {
	p.releaseOnce.Do(func() {
		go func() {
			defer close(p.released)
			w.close()
		}()
	})
}

// watch waits for the hook's container.id, then for the runtime's pidfile,
// then lists and verifies the table; nil when anything is missing. It
// looks at a file again only after an event that names it: the hook
// writes a dozen files into the state directory meanwhile, and re-reading
// container.id (or globbing the run root for the pidfile) on each of
// those wake-ups was most of the watch's CPU time.
func (p *Pending) watch(ctx context.Context, w *dirWatcher, dir, stale string) *earlyResult {
	s := p.s
	wd, err := w.add(dir)
	if err != nil {
		return nil
	}
	var short string
	for {
		if id := readTrim(filepath.Join(dir, shieldbundle.FileContainerID)); id != stale && names.LowerHex(id, 12, 12) {
			short = id
			break
		}
		if !w.waitFor(wd, shieldbundle.FileContainerID) {
			return nil
		}
	}
	userdata, err := s.userdataDir(short)
	if err != nil {
		return nil
	}
	if wd, err = w.add(userdata); err != nil {
		return nil
	}
	var pid int
	for {
		if pid, err = readPIDFile(filepath.Join(userdata, pidFile)); err == nil {
			break
		}
		if !w.waitFor(wd, pidFile) {
			return nil
		}
	}
	// No more events needed: let the kernel tear the watches down while
	// the table is listed.
	p.release(w)
	p.pid = pid
	close(p.listing)
	start := procStart(pid)
	if start == "" {
		return nil
	}
	text := s.fastTable(ctx, pid)
	if text == "" || ctx.Err() != nil {
		return nil
	}
	if errs := verifyEnforcing(dir, text); len(errs) > 0 {
		return nil
	}
	if procStart(pid) != start {
		return nil
	}
	return &earlyResult{short: short, userdata: userdata, pid: pid, start: start}
}

// Stop abandons the watch (podman failed, or the launch ended); it is safe
// to call more than once and after Finish. It does not wait for the
// watcher's descriptor to be closed (see release).
func (p *Pending) Stop() {
	p.cancel()
	<-p.done
}

// Wait stops the watch and waits until its inotify descriptor is closed
// too, so that nothing of the Pending is left (tests).
func (p *Pending) Wait() {
	p.Stop()
	if p.released != nil {
		<-p.released
	}
}

// Finish completes the verification for the container podman reported:
// the early result when it is about this very container, else the full
// VerifyStarted.
func (p *Pending) Finish(ctx context.Context, containerID string) error {
	select {
	case <-p.done:
	case <-p.listing:
		// The listing is under way: wait for it (bounded by its own
		// timeout), it is cheaper than starting over - unless the
		// command ends first (e.g. `true`, which podman returns for while
		// it still runs): VerifyStarted settles an ended one at once, as
		// it always has, where waiting for the listing cost ~7 ms.
		if !waitDoneOrExit(p.pid, p.done) {
			p.Stop()
		}
	default:
		// podman returned before the pidfile was seen: nothing proved.
		p.Stop()
	}
	if r := p.res; r != nil && p.matches(r, containerID) {
		launch.Mark(ctx, "verify: early check (during podman run)")
		if procStart(r.pid) == "" {
			return nil // ended, and its resolver with it
		}
		dir, err := p.s.stateDir()
		if err != nil {
			return err
		}
		err = verifyResolver(ctx, dir, p.container, r.pid)
		launch.Mark(ctx, "verify: resolver ready")
		return err
	}
	return p.s.VerifyStarted(ctx, p.container, containerID)
}

// matches ties the early result to podman's answer (see the file comment).
func (p *Pending) matches(r *earlyResult, containerID string) bool {
	full := strings.TrimSpace(containerID)
	if !names.LowerHex(full, 64, 64) || full[:12] != r.short {
		return false
	}
	dir, err := p.s.stateDir()
	if err != nil || readTrim(filepath.Join(dir, shieldbundle.FileContainerID)) != r.short {
		return false
	}
	// The run directory the watch found was the only one whose name
	// starts with the short id; that its name is podman's full id makes
	// it the run directory of that container (what runtimePID(full)
	// would glob for), without globbing the run root again.
	if filepath.Base(filepath.Dir(r.userdata)) != full {
		return false
	}
	pid, err := readPIDFile(filepath.Join(r.userdata, pidFile))
	if err != nil || pid != r.pid {
		return false
	}
	// Gone (a short command that already exited) or still the same
	// process; a different start time means the PID was reused.
	st := procStart(pid)
	return st == "" || st == r.start
}

// procStart is field 22 of /proc/PID/stat (start time in clock ticks since
// boot), "" when the process is gone.
func procStart(pid int) string {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	// After ") " come field 3 (state) onwards; start time is field 22.
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

// dirWatcher wakes its owner whenever something is created or renamed into
// a watched directory (inotify), so the watch costs no polling while
// podman works. The owner re-checks the files after every wake-up.
type dirWatcher struct {
	f    *os.File
	stop func() bool
}

func newDirWatcher(ctx context.Context) (*dirWatcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, err
	}
	// A non-blocking fd goes to the runtime poller: Read blocks the
	// goroutine, not a thread, and a deadline interrupts it.
	f := os.NewFile(uintptr(fd), "inotify")
	w := &dirWatcher{f: f}
	w.stop = context.AfterFunc(ctx, func() { _ = f.SetReadDeadline(time.Unix(1, 0)) })
	return w, nil
}

// add watches dir and returns the watch descriptor its events carry.
func (w *dirWatcher) add(dir string) (int, error) {
	raw, err := w.f.SyscallConn()
	if err != nil {
		return -1, err
	}
	wd, werr := -1, error(nil)
	err = raw.Control(func(fd uintptr) {
		wd, werr = unix.InotifyAddWatch(int(fd), dir, unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_CLOSE_WRITE|unix.IN_ONLYDIR)
	})
	return wd, errors.Join(err, werr)
}

// waitFor blocks until an event may concern file name in the directory
// of watch wd; false when cancelled or broken.
func (w *dirWatcher) waitFor(wd int, name string) bool {
	var buf [4096]byte
	for {
		n, err := w.f.Read(buf[:])
		if err != nil {
			return false
		}
		if eventsName(buf[:n], wd, name) {
			return true
		}
	}
}

// eventsName reports whether a batch of inotify events may concern file
// name in the directory of watch wd: an event of wd naming it, a queue
// overflow (events were lost, anything may have happened) or a batch it
// cannot parse (never expected from the kernel; counted as a hit, so the
// caller looks at the file again rather than miss it).
func eventsName(b []byte, wd int, name string) bool {
	for len(b) > 0 {
		if len(b) < unix.SizeofInotifyEvent {
			return true
		}
		ewd := int32(binary.NativeEndian.Uint32(b[0:4]))
		mask := binary.NativeEndian.Uint32(b[4:8])
		n := int(binary.NativeEndian.Uint32(b[12:16]))
		if n > len(b)-unix.SizeofInotifyEvent {
			return true
		}
		ename := b[unix.SizeofInotifyEvent : unix.SizeofInotifyEvent+n]
		if mask&unix.IN_Q_OVERFLOW != 0 {
			return true
		}
		if int(ewd) == wd && string(bytes.TrimRight(ename, "\x00")) == name {
			return true
		}
		b = b[unix.SizeofInotifyEvent+n:]
	}
	return false
}

func (w *dirWatcher) close() {
	w.stop()
	_ = w.f.Close()
}

// waitDoneOrExit waits until done is closed (true) or process pid has
// ended (false). A process that is already gone, or a zombie, has ended.
// It watches the process through a pidfd, which becomes readable when the
// process exits, so no polling; where pidfds are unavailable it waits for
// done alone.
func waitDoneOrExit(pid int, done <-chan struct{}) bool {
	if !processAlive(pid) {
		return false
	}
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if errors.Is(err, unix.ESRCH) {
		return false
	}
	if err != nil {
		<-done
		return true
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	raw, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		<-done
		return true
	}
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		// Each call asks the pidfd itself (poll with no wait) whether
		// the process has ended; false makes the runtime poller wait for
		// the next readiness edge. Asking first matters: RawRead resets
		// the poller's readiness before the first call, so an exit that
		// happened between registering the file and that reset left no
		// edge to wait for, and assuming "not yet" on the first call
		// waited forever (seen as a 10-minute test hang under load).
		_ = raw.Read(func(fd uintptr) bool {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(fds, 0)
			if errors.Is(err, unix.EINTR) {
				return false
			}
			// An error ends the wait as an exit would: the caller then
			// runs the full verification, which is never less strict.
			return err != nil || n > 0
		})
	}()
	var ok bool
	select {
	case <-done:
		ok = true
	case <-exited:
		ok = false
	}
	_ = f.Close() // ends the goroutine's wait
	<-exited
	return ok
}
