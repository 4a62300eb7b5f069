// Package auditq takes the credential proxy's audit records off the request
// path: Put hands a record to one writer goroutine through a buffered
// channel; Close drains it, so a clean shutdown loses no record
// (docs/audit.md, Channel proxy).
package auditq

import (
	"log/slog"
	"sync"

	"terok.dev/sandbox/common/audit"
)

// DefaultSize is the channel's capacity: a burst this large never waits for
// the disk. A full channel makes Put wait (records are never dropped).
const DefaultSize = 4096

// Queue owns the writer goroutine. Create it with New; Close stops it.
type Queue struct {
	w    *audit.Writer
	log  *slog.Logger
	ch   chan audit.Record
	done chan struct{}

	mu     sync.RWMutex // Put holds it shared, Close exclusive
	closed bool
	failed int // writes that failed, owned by the writer goroutine
}

// New starts the writer goroutine for w (a nil or disabled w writes
// nothing). size <= 0 takes DefaultSize.
func New(w *audit.Writer, size int, log *slog.Logger) *Queue {
	if size <= 0 {
		size = DefaultSize
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	q := &Queue{w: w, log: log, ch: make(chan audit.Record, size), done: make(chan struct{})}
	go q.run()
	return q
}

// Put queues r. After Close it writes r itself, so a late request is still
// on record.
func (q *Queue) Put(r audit.Record) {
	q.mu.RLock()
	if !q.closed {
		q.ch <- r
		q.mu.RUnlock()
		return
	}
	q.mu.RUnlock()
	if err := q.w.Write(r); err != nil {
		q.log.Error("Cannot write audit record; check the audit directory's space and permissions", "error", err.Error())
	}
}

func (q *Queue) run() {
	defer close(q.done)
	for r := range q.ch {
		if err := q.w.Write(r); err != nil {
			// One line per failure would flood the log on a full disk.
			if q.failed%1000 == 0 {
				q.log.Error("Cannot write audit record; check the audit directory's space and permissions",
					"error", err.Error(), "failed_so_far", q.failed+1)
			}
			q.failed++
		}
	}
}

// Close writes every queued record and stops the goroutine. Safe to call
// more than once.
func (q *Queue) Close() {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.ch)
	}
	q.mu.Unlock()
	<-q.done
}
