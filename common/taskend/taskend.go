// Package taskend is the task-ends contract (docs/formats.md, Task ends):
// whoever sees a task's container go (the runner's stop, the shield hook's
// poststop) records the end, and the daemons refuse every token bound to
// that container from before the end (docs/security-model.md, Tokens that
// die with their task).
package taskend

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"terok.dev/sandbox/common/atomicfile"
	"terok.dev/sandbox/common/filelock"
	"terok.dev/sandbox/common/names"
)

// Reasons an end is recorded with; the daemons' audit records say task-gone.
const (
	ReasonStopped = "stopped" // terok-sandbox stop removed the container
	ReasonExited  = "exited"  // the container's process ended (poststop)
)

// Suffix ends every record file's name; other names in the directory
// (the lock, temporary files) are not records.
const Suffix = ".json"

// maxRecord bounds what a reader takes from one file: a record is well under
// it, and anything larger is not ours.
const maxRecord = 4096

// End is one container's end.
type End struct {
	Container string    `json:"container"`
	Ended     time.Time `json:"ended"`
	Reason    string    `json:"reason"`
	// ID is the container id when the writer knew it (diagnostics only).
	ID string `json:"id,omitempty"`
}

// Parse reads one record strictly: a valid container name, an RFC 3339
// `ended` and a non-empty reason of letters and dashes; anything else is an
// error (the caller skips the file).
func Parse(data []byte) (End, error) {
	if len(data) > maxRecord {
		return End{}, fmt.Errorf("task end record of %d bytes, over %d", len(data), maxRecord)
	}
	var raw struct {
		Container *string `json:"container"`
		Ended     *string `json:"ended"`
		Reason    *string `json:"reason"`
		ID        string  `json:"id"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return End{}, fmt.Errorf("task end record: %w", err)
	}
	if raw.Container == nil || raw.Ended == nil || raw.Reason == nil {
		return End{}, errors.New("task end record: container, ended and reason are required")
	}
	if err := names.ValidateContainerName(*raw.Container); err != nil {
		return End{}, fmt.Errorf("task end record: %w", err)
	}
	ended, err := time.Parse(time.RFC3339Nano, *raw.Ended)
	if err != nil {
		return End{}, fmt.Errorf("task end record: ended: %w", err)
	}
	if !validReason(*raw.Reason) {
		return End{}, fmt.Errorf("task end record: reason %q is not a word of letters and dashes", *raw.Reason)
	}
	return End{Container: *raw.Container, Ended: ended, Reason: *raw.Reason, ID: raw.ID}, nil
}

func validReason(r string) bool {
	if r == "" || len(r) > 32 {
		return false
	}
	for _, c := range r {
		if (c < 'a' || c > 'z') && c != '-' {
			return false
		}
	}
	return true
}

// Record writes e as <dir>/<container>.json by atomic replace under the
// directory's lock (docs/formats.md, Task ends). An earlier end of the same
// name is replaced: a token is refused when it was bound before the latest
// end, which covers every earlier end too.
func Record(dir string, e End) error {
	if err := names.ValidateContainerName(e.Container); err != nil {
		return fmt.Errorf("record task end: %w", err)
	}
	if !validReason(e.Reason) {
		return fmt.Errorf("record task end of %s: bad reason %q", e.Container, e.Reason)
	}
	if e.Ended.IsZero() {
		e.Ended = time.Now()
	}
	e.Ended = e.Ended.UTC()
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("record task end of %s: %w", e.Container, err)
	}
	if err := atomicfile.MkdirPrivate(dir); err != nil {
		return fmt.Errorf("record task end of %s: %w", e.Container, err)
	}
	lk, err := filelock.Exclusive(filepath.Join(dir, ".lock"))
	if err != nil {
		return fmt.Errorf("record task end of %s: %w", e.Container, err)
	}
	defer lk.Close()
	path := filepath.Join(dir, e.Container+Suffix)
	if old, err := readRecord(path); err == nil && old.Ended.After(e.Ended) {
		return nil // a later end is already on record
	}
	if err := atomicfile.WriteFile(path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("record task end of %s: %w", e.Container, err)
	}
	return nil
}

func readRecord(path string) (End, error) {
	data, err := readLimited(path)
	if err != nil {
		return End{}, err
	}
	return Parse(data)
}

// readLimited reads at most maxRecord+1 bytes of path (Parse refuses more).
func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxRecord+1))
}

// Watcher is a daemon's cached view of the directory. A lookup costs one
// stat of the directory; the records are re-read only when its identity
// changed (every record write renames into it) or when the last change was
// too recent to trust the timestamp's granularity. A running container's
// start record adds one poll(2) of a pidfd the watcher holds for its
// process. Safe for concurrent use; Close releases the pidfds.
type Watcher struct {
	dir   string
	log   *slog.Logger
	now   func() time.Time
	pidns string

	mu     sync.Mutex
	loaded bool
	id     dirID
	readAt time.Time
	ends   map[string]End
	starts map[string]*proc
	// startsSince is the directory's FileStartsSince (zero: none yet).
	startsSince time.Time
	warned      bool // a start record of another PID namespace was logged
}

// proc is the watcher's view of one start record's process.
type proc struct {
	st     Start
	fd     int  // pidfd, -1: none (not opened yet, or kill(2) fallback)
	opened bool // the pidfd was tried
	dead   bool
}

type dirID struct {
	mtimeNs  int64
	ino, dev uint64
}

// settle is how long after a directory change a cached read is not trusted:
// a directory's mtime comes from the coarse clock (a jiffy), so a second
// rename within the same tick would leave it unchanged.
const settle = 2 * time.Second

// reread bounds how often the records are re-read inside the settle
// window: a full read costs about 1-2 ms per hundred records, so a busy
// daemon re-reads at most ten times a second, and a change in the same
// clock tick as the previous one is seen within 100 ms.
const reread = 100 * time.Millisecond

// NewWatcher returns a watcher of dir (a missing directory: no ends yet).
func NewWatcher(dir string, log *slog.Logger) *Watcher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Watcher{dir: dir, log: log, now: time.Now, pidns: PIDNamespace()}
}

// Close releases the pidfds the watcher holds; it keeps working (with new
// ones) if used again.
func (w *Watcher) Close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range w.starts {
		p.close()
	}
	w.starts = nil
	w.loaded = false
}

// Dir is the watched directory.
func (w *Watcher) Dir() string { return w.dir }

// Gone reports the end of container that makes a token bound at since dead
// (docs/security-model.md, Tokens that die with their task):
//   - an end recorded at or after since (its reason: stopped, exited);
//   - else, for a binding from before start records came into use
//     (FileStartsSince), nothing;
//   - else, when a start is on record and not ended since: alive while its
//     process is; a process gone after a start claimed at or after since
//     is an end (start-failed for a runner, process-gone for a container),
//     one gone before since belongs to an earlier run (pending, below);
//   - else (pending: no start since the binding) alive for StartLease
//     after since, then lease-expired.
//
// A zero since (a token without a binding) is never gone.
func (w *Watcher) Gone(container string, since time.Time) (End, bool) {
	if container == "" || since.IsZero() {
		return End{}, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.refresh()
	e, ended := w.ends[container]
	if ended && !e.Ended.Before(since) {
		return e, true
	}
	if w.startsSince.IsZero() || since.Before(w.startsSince) {
		return End{}, false // a binding from before start records (FileStartsSince)
	}
	if p := w.starts[container]; p != nil && (!ended || p.st.Started.After(e.Ended)) {
		if w.alive(p) {
			return End{}, false
		}
		if !p.st.Started.Before(since) {
			reason := ReasonProcessGone
			if p.st.Phase == PhaseStarting {
				reason = ReasonStartFailed
			}
			return End{Container: container, Ended: w.now().UTC(), Reason: reason, ID: p.st.ID}, true
		}
	}
	if w.now().Sub(since) < StartLease {
		return End{}, false
	}
	return End{Container: container, Ended: since.Add(StartLease).UTC(), Reason: ReasonLeaseExpired}, true
}

// alive checks p's process: once a pidfd (the start time compared when
// /proc shows it), then a poll of it per call; without pidfds, kill(2).
// Called with mu held.
func (w *Watcher) alive(p *proc) bool {
	if p.dead {
		return false
	}
	if p.st.PIDNS != "" && w.pidns != "" && p.st.PIDNS != w.pidns {
		if !w.warned {
			w.warned = true
			w.log.Warn("a start record of another PID namespace: its process cannot be checked, so only end records and stop end its tokens",
				"container", p.st.Container, "record_pidns", p.st.PIDNS, "pidns", w.pidns,
				"next", "run the daemons in the host's PID namespace")
		}
		return true
	}
	if !p.opened {
		p.opened = true
		fd, err := unix.PidfdOpen(p.st.PID, 0)
		switch {
		case errors.Is(err, unix.ESRCH):
			p.dead = true
			return false
		case err == nil:
			p.fd = fd
			if p.st.PIDStart != 0 {
				if now := ProcStart(p.st.PID); now != 0 && now != p.st.PIDStart {
					p.close()
					p.dead = true // the PID was recycled
					return false
				}
			}
		}
	}
	if p.fd >= 0 {
		fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
		if n, err := unix.Poll(fds, 0); err == nil && n > 0 {
			p.close()
			p.dead = true
		}
		return !p.dead
	}
	if !Alive(p.st) {
		p.dead = true
	}
	return !p.dead
}

func (p *proc) close() {
	if p.fd >= 0 {
		unix.Close(p.fd)
		p.fd = -1
	}
}

// refresh re-reads the records when the directory changed. Called with mu held.
func (w *Watcher) refresh() {
	fi, err := os.Stat(w.dir)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) && w.loaded {
			w.log.Warn("cannot stat the task-ends directory; keeping the ends read before",
				"dir", w.dir, "error", err.Error(), "next", "check the directory's permissions")
		}
		if errors.Is(err, fs.ErrNotExist) {
			for _, p := range w.starts {
				p.close()
			}
			w.loaded, w.ends, w.starts = false, nil, nil
		}
		return
	}
	id := dirID{mtimeNs: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.ino, id.dev = st.Ino, uint64(st.Dev)
	}
	now := w.now()
	if w.loaded && id == w.id && (now.Sub(fi.ModTime()) > settle || now.Sub(w.readAt) < reread) {
		return
	}
	ents, err := os.ReadDir(w.dir)
	if err != nil {
		w.log.Warn("cannot list the task-ends directory; keeping the ends read before",
			"dir", w.dir, "error", err.Error(), "next", "check the directory's permissions")
		return
	}
	ends := make(map[string]End, len(ents))
	starts := make(map[string]*proc)
	for _, de := range ents {
		name := de.Name()
		if strings.HasPrefix(name, ".") || !de.Type().IsRegular() {
			continue
		}
		if strings.HasSuffix(name, StartSuffix) {
			st, err := readStart(filepath.Join(w.dir, name))
			if err != nil || st.Container+StartSuffix != name {
				if !errors.Is(err, fs.ErrNotExist) {
					w.log.Warn("task-ends start record skipped", "file", name, "error", fmt.Sprint(err))
				}
				continue
			}
			if old := w.starts[st.Container]; old != nil && old.st.same(st) {
				starts[st.Container] = old
			} else {
				starts[st.Container] = &proc{st: st, fd: -1}
			}
			continue
		}
		if !strings.HasSuffix(name, Suffix) {
			continue
		}
		e, err := readRecord(filepath.Join(w.dir, name))
		if err != nil {
			w.log.Warn("task-ends record skipped", "file", name, "error", err.Error())
			continue
		}
		if e.Container+Suffix != name {
			w.log.Warn("task-ends record skipped: it names another container", "file", name, "container", e.Container)
			continue
		}
		ends[e.Container] = e
	}
	for c, p := range w.starts {
		if starts[c] != p {
			p.close()
		}
	}
	w.id, w.loaded, w.ends, w.starts, w.readAt = id, true, ends, starts, now
	w.startsSince = readStartsSince(w.dir)
}

// same reports whether two start records name the same process.
func (s Start) same(o Start) bool {
	return s.Started.Equal(o.Started) && s.Phase == o.Phase && s.PID == o.PID && s.PIDStart == o.PIDStart && s.PIDNS == o.PIDNS
}
