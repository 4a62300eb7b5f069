package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"syscall"
	"time"

	"terok.dev/sandbox/common/filelock"
)

// DefaultPoll is how often Follow looks for new records when it has read
// everything (docs/audit.md, Reading: Merge and Follow).
const DefaultPoll = 250 * time.Millisecond

// maxLine bounds one record; a longer line is dropped with a warning so a
// runaway writer cannot make a reader hold unbounded memory.
const maxLine = 1 << 20

// maxRotated bounds the rotated files a reader looks for (PATH.1 ..).
const maxRotated = 1000

// FollowOptions tunes FollowWith. Zero values take the defaults.
type FollowOptions struct {
	// FromStart streams the records already written, the rotated files
	// PATH.N .. PATH.1 oldest first and then PATH, before the new ones.
	// Without it only records written after Follow started are streamed.
	FromStart bool
	// Poll is the interval between looks at the file; default DefaultPoll.
	Poll time.Duration
	// Warn receives "file:line: error" for a corrupt line and notes about
	// truncation and removed files; nil drops them.
	Warn func(msg string)
	// CaughtUp, when set, is called once, the first time everything written
	// so far has been streamed (also when PATH does not exist yet).
	CaughtUp func()
}

// Follow streams the records of the audit file path to fn as they land,
// across rotation (PATH renamed to PATH.1: the old file is read to its end,
// then PATH is reopened), truncation and a file that does not exist yet,
// until ctx is done (then it returns nil) or fn returns an error (returned).
// fromStart streams the records already written first; warn receives
// corrupt-line warnings as "file:line: error" and may be nil.
func Follow(ctx context.Context, path string, fromStart bool, fn func(Record) error, warn func(string)) error {
	return FollowWith(ctx, path, FollowOptions{FromStart: fromStart, Warn: warn}, fn)
}

// FollowWith is Follow with all its options.
//
// Follow polls rather than using inotify: a reader must stat PATH anyway to
// notice a rotation (the rename changes which inode PATH names), polling works
// on every file system the state directory may live on (overlay, NFS, tmpfs),
// needs no descriptor per watched directory, and a quarter second is well
// below what a person reading a timeline notices.
func FollowWith(ctx context.Context, path string, opt FollowOptions, fn func(Record) error) error {
	if opt.Poll <= 0 {
		opt.Poll = DefaultPoll
	}
	fl := &follower{path: path, opt: opt, fn: fn}
	defer fl.closeAll()
	return fl.run(ctx)
}

// tailFile is one open audit file being read.
type tailFile struct {
	f    *os.File
	name string // the name it had when opened, for warnings
	off  int64  // bytes consumed
	line int    // lines consumed
	buf  []byte // an incomplete last line
	skip bool   // discarding an over-long line up to its newline
}

type follower struct {
	path    string
	opt     FollowOptions
	fn      func(Record) error
	queue   []*tailFile // oldest first; the last one is the file at PATH
	started bool        // the first open happened
	caught  bool
}

func (fl *follower) warn(msg string) {
	if fl.opt.Warn != nil {
		fl.opt.Warn(msg)
	}
}

func (fl *follower) closeAll() {
	for _, t := range fl.queue {
		_ = t.f.Close()
	}
	fl.queue = nil
}

func (fl *follower) run(ctx context.Context) error {
	tick := time.NewTicker(fl.opt.Poll)
	defer tick.Stop()
	for {
		if err := ctx.Err(); err != nil {
			return nil
		}
		idle, err := fl.step()
		if err != nil {
			return err
		}
		if !idle {
			continue
		}
		if !fl.caught {
			fl.caught = true
			if fl.opt.CaughtUp != nil {
				fl.opt.CaughtUp()
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// step does one round of work; idle reports that there was nothing to read.
func (fl *follower) step() (idle bool, err error) {
	if len(fl.queue) == 0 {
		if err := fl.openInitial(); err != nil {
			return false, err
		}
		if len(fl.queue) == 0 {
			return true, nil
		}
	}
	head := fl.queue[0]
	n, err := fl.drain(head)
	if err != nil {
		return false, err
	}
	if len(fl.queue) > 1 {
		// An older file: nobody writes it any more (the chain was opened
		// under the writers' lock), so its end is its end.
		fl.finish(head)
		fl.queue = fl.queue[1:]
		return false, nil
	}
	if n > 0 {
		return false, nil
	}
	return fl.checkLive(head)
}

// openInitial opens PATH (and with FromStart its rotated files) the first
// time, or PATH again after it had been removed.
func (fl *follower) openInitial() error {
	first := !fl.started
	var chain []*tailFile
	var err error
	if first && fl.opt.FromStart {
		chain, err = openChain(fl.path)
	} else {
		var t *tailFile
		t, err = openTail(fl.path)
		if t != nil {
			chain = []*tailFile{t}
		}
	}
	if err != nil {
		return err
	}
	fl.started = true
	if len(chain) == 0 {
		return nil
	}
	if first && !fl.opt.FromStart {
		// Only what lands from now on: skip to the last complete line.
		t := chain[0]
		end, err := t.f.Seek(0, io.SeekEnd)
		if err != nil {
			_ = t.f.Close()
			return fmt.Errorf("audit follow %s: %w", fl.path, err)
		}
		t.off = end
		t.line = -1 // line numbers are unknown after a seek
	}
	fl.queue = chain
	return nil
}

// checkLive looks at PATH after the live file read to its end: still the
// same file (maybe truncated), rotated away, or removed.
func (fl *follower) checkLive(t *tailFile) (idle bool, err error) {
	cur, err := t.f.Stat()
	if err != nil {
		return false, fmt.Errorf("audit follow %s: %w", t.name, err)
	}
	st, err := os.Stat(fl.path)
	switch {
	case err == nil && os.SameFile(cur, st):
		if cur.Size() < t.off {
			fl.warn(fmt.Sprintf("%s: truncated from %d to %d bytes; reading it again from the start, records written in between may be lost", fl.path, t.off, cur.Size()))
			if _, err := t.f.Seek(0, io.SeekStart); err != nil {
				return false, fmt.Errorf("audit follow %s: %w", fl.path, err)
			}
			t.off, t.line, t.buf, t.skip = 0, 0, nil, false
			return false, nil
		}
		return true, nil
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return false, fmt.Errorf("audit follow %s: %w", fl.path, err)
	}
	// PATH names another file or none: the live file was rotated or removed.
	newer, err := fl.successors(t, cur)
	if err != nil {
		return false, err
	}
	if _, err := fl.drain(t); err != nil {
		closeTails(newer)
		return false, err
	}
	fl.finish(t)
	fl.queue = newer
	return false, nil
}

// successors opens, under the writers' lock, the files written after t: the
// rotated files newer than t and PATH. Holding the lock, no rotation and no
// write happens while they are opened, so after it t is complete.
func (fl *follower) successors(t *tailFile, cur os.FileInfo) ([]*tailFile, error) {
	unlock := lockShared(fl.path)
	defer unlock()
	names, infos := listChain(fl.path) // oldest first, PATH last when present
	at := -1
	for i, fi := range infos {
		if os.SameFile(fi, cur) {
			at = i
		}
	}
	var pick []string
	if at >= 0 {
		pick = names[at+1:]
	} else {
		// Removed rather than renamed (dropped past Keep, or by hand):
		// the files not older than the one we read are its successors.
		fl.warn(fmt.Sprintf("%s: the file being followed was removed; records written to files removed since may be lost", fl.path))
		for i, fi := range infos {
			if !fi.ModTime().Before(cur.ModTime()) {
				pick = append(pick, names[i])
			}
		}
	}
	var out []*tailFile
	for _, n := range pick {
		nt, err := openTail(n)
		if err != nil {
			closeTails(out)
			return nil, err
		}
		if nt != nil {
			out = append(out, nt)
		}
	}
	return out, nil
}

// finish closes a file read to its end; an incomplete last line is torn.
func (fl *follower) finish(t *tailFile) {
	if len(t.buf) > 0 {
		fl.warn(fmt.Sprintf("%s:%s: torn record (no newline at the end of the file)", t.name, lineNo(t.line+1)))
	}
	_ = t.f.Close()
}

// drain reads t to its current end and streams every complete line; it
// returns the bytes read.
func (fl *follower) drain(t *tailFile) (int, error) {
	var chunk [64 << 10]byte
	total := 0
	for {
		n, err := t.f.Read(chunk[:])
		if n > 0 {
			total += n
			t.off += int64(n)
			if ferr := fl.feed(t, chunk[:n]); ferr != nil {
				return total, ferr
			}
		}
		if errors.Is(err, io.EOF) || (n == 0 && err == nil) {
			return total, nil
		}
		if err != nil {
			return total, fmt.Errorf("audit follow %s: %w", t.name, err)
		}
	}
}

func (fl *follower) feed(t *tailFile, b []byte) error {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			if !t.skip {
				t.buf = append(t.buf, b...)
				if len(t.buf) > maxLine {
					t.buf, t.skip = nil, true
				}
			}
			return nil
		}
		line := b[:i]
		b = b[i+1:]
		if t.line >= 0 {
			t.line++
		}
		if t.skip {
			t.skip = false
			fl.warn(fmt.Sprintf("%s:%s: line longer than %d bytes skipped", t.name, lineNo(t.line), maxLine))
			continue
		}
		if len(t.buf) > 0 {
			line = append(t.buf, line...)
			t.buf = nil
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		r, err := ParseLine(line)
		if err != nil {
			fl.warn(fmt.Sprintf("%s:%s: %v", t.name, lineNo(t.line), err))
			continue
		}
		if err := fl.fn(r); err != nil {
			return err
		}
	}
	return nil
}

// lineNo prints a line number, "?" when it is unknown (following from the
// end of a file).
func lineNo(n int) string {
	if n <= 0 {
		return "?"
	}
	return strconv.Itoa(n)
}

func closeTails(ts []*tailFile) {
	for _, t := range ts {
		_ = t.f.Close()
	}
}

// openTail opens name for reading; a missing file is (nil, nil).
func openTail(name string) (*tailFile, error) {
	f, err := os.Open(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit open %s: %w", name, err)
	}
	return &tailFile{f: f, name: name}, nil
}

// openChain opens PATH.N .. PATH.1, PATH (oldest first, missing ones left
// out) under the writers' lock, so no rotation falls between two opens.
func openChain(path string) ([]*tailFile, error) {
	unlock := lockShared(path)
	defer unlock()
	names, _ := listChain(path)
	var out []*tailFile
	for _, n := range names {
		t, err := openTail(n)
		if err != nil {
			closeTails(out)
			return nil, err
		}
		if t != nil {
			out = append(out, t)
		}
	}
	return out, nil
}

// listChain names the existing files of path's rotation set, oldest first.
func listChain(path string) ([]string, []os.FileInfo) {
	var names []string
	var infos []os.FileInfo
	for i := 1; i <= maxRotated; i++ {
		n := path + "." + strconv.Itoa(i)
		fi, err := os.Stat(n)
		if err != nil {
			break
		}
		names = append(names, n)
		infos = append(infos, fi)
	}
	for l, r := 0, len(names)-1; l < r; l, r = l+1, r-1 {
		names[l], names[r] = names[r], names[l]
		infos[l], infos[r] = infos[r], infos[l]
	}
	if fi, err := os.Stat(path); err == nil {
		names = append(names, path)
		infos = append(infos, fi)
	}
	return names, infos
}

// lockShared takes LOCK_SH on PATH.lock when it exists, so the writers
// (which hold LOCK_EX to write and rotate) stand still. A reader never
// creates the lock file; without it (no writer yet, or a read-only copy)
// it reads without the lock.
func lockShared(path string) (unlock func()) {
	f, err := os.Open(path + ".lock")
	if err != nil {
		return func() {}
	}
	if err := filelock.Flock(f, syscall.LOCK_SH); err != nil {
		_ = f.Close()
		return func() {}
	}
	return func() { _ = f.Close() }
}

// Merge reads the records of several audit files, each with its rotated
// files (PATH.N .. PATH.1, PATH), and returns them ordered by time; records
// of the same time keep the order of paths and of their files. A missing
// file has no records. Corrupt lines are skipped and reported to warn as
// "file:line: error"; warn may be nil.
func Merge(warn func(string), paths ...string) ([]Record, error) {
	var all []Record
	for _, p := range paths {
		chain, err := openChain(p)
		if err != nil {
			return nil, err
		}
		for i, t := range chain {
			recs, err := readOpen(t, warn)
			if err != nil {
				closeTails(chain[i:])
				return nil, err
			}
			_ = t.f.Close()
			all = append(all, recs...)
		}
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].Time.Before(all[j].Time) })
	return all, nil
}

// readOpen reads every record of an open file with the follower's line
// handling, reporting a torn last line.
func readOpen(t *tailFile, warn func(string)) ([]Record, error) {
	var out []Record
	fl := &follower{opt: FollowOptions{Warn: warn}, fn: func(r Record) error { out = append(out, r); return nil }}
	if _, err := fl.drain(t); err != nil {
		return out, err
	}
	if len(t.buf) > 0 {
		fl.warn(fmt.Sprintf("%s:%d: torn record (no newline at the end of the file)", t.name, t.line+1))
	}
	return out, nil
}
