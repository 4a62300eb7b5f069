package audit

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"terok.dev/sandbox/common/filelock"
)

// Options tunes a Writer. Zero values take the defaults.
type Options struct {
	MaxBytes int64 // rotate when the file would grow past this; default 16 MiB
	Keep     int   // rotated files kept (path.1 .. path.Keep); default 3
	// KeepFirst keeps the first file written for good: once it has been
	// rotated up to path.Keep it is never dropped, and later rotations
	// shift only path .. path.Keep-1, dropping path.Keep-1 (docs/audit.md,
	// Files, rotation, modes). The bound stays (1+Keep) × MaxBytes; what
	// a flood rotates away is the middle, never the earliest records.
	KeepFirst bool
	Disabled  bool // Write is a no-op
}

// Writer appends records to one audit file, safe across processes.
type Writer struct {
	path string
	opt  Options
}

// Open prepares path for appending: creates its directory 0700 and the file 0600.
func Open(path string, opt Options) (*Writer, error) {
	if opt.MaxBytes <= 0 {
		opt.MaxBytes = 16 << 20
	}
	if opt.Keep <= 0 {
		opt.Keep = 3
	}
	if opt.Disabled {
		return &Writer{path: path, opt: opt}, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("audit open %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit open %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("audit open %s: %w", path, err)
	}
	return &Writer{path: path, opt: opt}, nil
}

// Write appends r as one line with one write(2) under the flock of path.lock,
// rotating first when the file would exceed MaxBytes. V and Time are set
// when zero. A nil or disabled Writer does nothing.
func (w *Writer) Write(r Record) error {
	if w == nil || w.opt.Disabled {
		return nil
	}
	if r.V == 0 {
		r.V = Version
	}
	if r.Time.IsZero() {
		r.Time = time.Now()
	}
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("audit record: %w", err)
	}
	return w.WriteLines(append(b, '\n'))
}

// WriteLines appends b, one or more complete records each encoded as in
// Write and ending in a newline, with one write(2) under the lock: a
// batch lands whole, so a reader never sees half of it, and a daemon that
// queues its records pays the lock and the open once per batch. Rotation
// is checked for the batch as a whole. A nil or disabled Writer does
// nothing.
func (w *Writer) WriteLines(b []byte) error {
	if w == nil || w.opt.Disabled || len(b) == 0 {
		return nil
	}
	if b[len(b)-1] != '\n' {
		return errors.New("audit write: a batch must end with a newline")
	}
	lk, err := filelock.Exclusive(w.path + ".lock")
	if err != nil {
		return fmt.Errorf("audit write: %w", err)
	}
	defer func() { _ = lk.Close() }()
	if st, err := os.Stat(w.path); err == nil && st.Size() > 0 && st.Size()+int64(len(b)) > w.opt.MaxBytes {
		if err := w.rotate(); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("audit write %s: %w", w.path, err)
	}
	_, werr := f.Write(b)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		return fmt.Errorf("audit write %s: %w", w.path, err)
	}
	return nil
}

// rotate shifts path.N-1 -> path.N ... path -> path.1, dropping path.Keep;
// with KeepFirst and path.Keep present (the first file) it shifts only up
// to path.Keep-1, dropping that one, and with Keep 1 it then drops path
// itself. Called with the lock held.
func (w *Writer) rotate() error {
	top := w.opt.Keep
	if w.opt.KeepFirst {
		if _, err := os.Lstat(w.path + "." + strconv.Itoa(top)); err == nil {
			top--
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("audit rotate: %w", err)
		}
	}
	if top == 0 {
		if err := os.Remove(w.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("audit rotate: %w", err)
		}
		return nil
	}
	for i := top - 1; i >= 1; i-- {
		from := w.path + "." + strconv.Itoa(i)
		if err := os.Rename(from, w.path+"."+strconv.Itoa(i+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("audit rotate: %w", err)
		}
	}
	if err := os.Rename(w.path, w.path+".1"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("audit rotate: %w", err)
	}
	return nil
}

// Close releases the Writer. Records are already on disk after each Write.
func (w *Writer) Close() error { return nil }
