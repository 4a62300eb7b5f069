// Package auditq takes the credential proxy's audit records off the request
// path: Put hands a record to one writer goroutine through a buffered
// channel; the goroutine encodes whatever has queued up and appends it
// with one write (audit.Writer.WriteLines); Close drains the channel, so a
// clean shutdown loses no record (docs/credential-proxy.md, Audit records).
package auditq

import (
	"log/slog"
	"sync"
	"time"

	"terok.dev/sandbox/common/audit"
)

// DefaultSize is the channel's capacity: a burst this large never waits for
// the disk. A full channel makes Put wait (records are never dropped).
const DefaultSize = 4096

// maxBatch bounds the bytes of one write.
const maxBatch = 256 << 10

// gather is how long the writer waits after a record for more to queue
// up before it writes: one write (lock, open, write, close) then serves
// every request of those milliseconds instead of one each - measured, the
// per-record write cost 23 us CPU per request under load, most of the audit's
// cost (docs/credential-proxy.md, Measurements). It is also the most a
// record waits in memory.
const gather = 5 * time.Millisecond

// Encode appends one record as a JSON line (with its newline) to b.
type Encode[T any] func(b []byte, r *T) ([]byte, error)

// Queue owns the writer goroutine. Create it with New; Close stops it.
type Queue[T any] struct {
	w    *audit.Writer
	enc  Encode[T]
	log  *slog.Logger
	ch   chan T
	done chan struct{}

	mu     sync.RWMutex // Put holds it shared, Close exclusive
	closed bool
	failed int // records lost to failed writes, owned by the writer goroutine
}

// New starts the writer goroutine for w (a nil or disabled w writes
// nothing). size <= 0 takes DefaultSize.
func New[T any](w *audit.Writer, enc Encode[T], size int, log *slog.Logger) *Queue[T] {
	if size <= 0 {
		size = DefaultSize
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	q := &Queue[T]{w: w, enc: enc, log: log, ch: make(chan T, size), done: make(chan struct{})}
	go q.run()
	return q
}

// Put queues r. After Close it writes r itself, so a late request is still
// on record.
func (q *Queue[T]) Put(r T) {
	q.mu.RLock()
	if !q.closed {
		q.ch <- r
		q.mu.RUnlock()
		return
	}
	q.mu.RUnlock()
	b, err := q.enc(nil, &r)
	if err == nil {
		err = q.w.WriteLines(b)
	}
	if err != nil {
		q.log.Error("Cannot write audit record; check the audit directory's space and permissions", "error", err.Error())
	}
}

func (q *Queue[T]) run() {
	defer close(q.done)
	buf := make([]byte, 0, 64<<10)
	n := 0
	for r := range q.ch {
		buf, n = q.add(buf[:0], &r), 1
		// Whatever queues up meanwhile goes in the same write.
		time.Sleep(gather)
	more:
		for len(buf) < maxBatch {
			select {
			case r, ok := <-q.ch:
				if !ok {
					break more
				}
				buf = q.add(buf, &r)
				n++
			default:
				break more
			}
		}
		if err := q.w.WriteLines(buf); err != nil {
			// One line per failure would flood the log on a full disk.
			if q.failed == 0 || q.failed/10000 != (q.failed+n)/10000 {
				q.log.Error("Cannot write audit records; check the audit directory's space and permissions",
					"error", err.Error(), "lost_so_far", q.failed+n)
			}
			q.failed += n
		}
		if cap(buf) > 4*maxBatch {
			buf = make([]byte, 0, 64<<10)
		}
	}
}

func (q *Queue[T]) add(buf []byte, r *T) []byte {
	out, err := q.enc(buf, r)
	if err != nil {
		q.log.Error("Cannot encode audit record", "error", err.Error())
		return buf
	}
	return out
}

// Close writes every queued record and stops the goroutine. Safe to call
// more than once.
func (q *Queue[T]) Close() {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.ch)
	}
	q.mu.Unlock()
	<-q.done
}
