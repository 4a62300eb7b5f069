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
	f, err := os.Open(path)
	if err != nil {
		return End{}, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxRecord+1))
	if err != nil {
		return End{}, err
	}
	return Parse(data)
}

// Watcher is a daemon's cached view of the directory. A lookup costs one
// stat of the directory; the records are re-read only when its identity
// changed (every record write renames into it) or when the last change was
// too recent to trust the timestamp's granularity. Safe for concurrent use.
type Watcher struct {
	dir string
	log *slog.Logger
	now func() time.Time

	mu     sync.Mutex
	loaded bool
	id     dirID
	readAt time.Time
	ends   map[string]End
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
	return &Watcher{dir: dir, log: log, now: time.Now}
}

// Dir is the watched directory.
func (w *Watcher) Dir() string { return w.dir }

// Gone reports the end of container that makes a token bound at since dead:
// one recorded at or after since. A zero since (a token without a binding)
// is never gone.
func (w *Watcher) Gone(container string, since time.Time) (End, bool) {
	if container == "" || since.IsZero() {
		return End{}, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.refresh()
	e, ok := w.ends[container]
	if !ok || e.Ended.Before(since) {
		return End{}, false
	}
	return e, true
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
			w.loaded, w.ends = false, nil
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
	for _, de := range ents {
		name := de.Name()
		if !strings.HasSuffix(name, Suffix) || strings.HasPrefix(name, ".") || !de.Type().IsRegular() {
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
	w.id, w.loaded, w.ends, w.readAt = id, true, ends, now
}
