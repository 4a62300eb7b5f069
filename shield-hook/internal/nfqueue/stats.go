package nfqueue

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
)

// StatsPath is the kernel's table of the NFQUEUE queues bound in the
// opening thread's network namespace (thread-self: a Go program may run
// threads in several), one line per queue: queue number,
// peer port id, packets held, copy mode, copy range, packets dropped for
// a full queue, packets dropped for a full socket buffer, last packet id,
// and 1.
const StatsPath = "/proc/thread-self/net/netfilter/nfnetlink_queue"

// maxStats bounds the read of the table (a namespace with every queue
// bound has 65536 lines; the resolver's has one).
const maxStats = 64 << 10

// Stats reads the drop counters of one queue. The file is opened once
// (before the resolver drops its capabilities) and read again from its
// start on every call.
type Stats struct {
	f   *os.File
	num uint16
	buf []byte
}

// OpenStats opens StatsPath for queue num.
func OpenStats(num uint16) (*Stats, error) {
	f, err := os.Open(StatsPath)
	if err != nil {
		return nil, fmt.Errorf("nfqueue stats: %w", err)
	}
	return &Stats{f: f, num: num, buf: make([]byte, 0, 4096)}, nil
}

// Dropped is how many packets the kernel dropped from the queue since it
// was bound (full queue plus full socket buffer); ok is false while the
// queue is not bound.
func (s *Stats) Dropped() (n uint64, ok bool, err error) {
	if _, err := s.f.Seek(0, io.SeekStart); err != nil {
		return 0, false, fmt.Errorf("nfqueue stats: %w", err)
	}
	s.buf = s.buf[:0]
	b, err := readUpTo(s.f, s.buf, maxStats)
	s.buf = b[:0]
	if err != nil {
		return 0, false, fmt.Errorf("nfqueue stats: %w", err)
	}
	n, ok = ParseStats(b, s.num)
	return n, ok, nil
}

// Close closes the file.
func (s *Stats) Close() error { return s.f.Close() }

func readUpTo(r io.Reader, b []byte, max int) ([]byte, error) {
	for len(b) < max {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):min(cap(b), max)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
	return b, nil
}

// ParseStats finds queue num's line in the table and returns its two
// drop counters summed; a line that does not parse is skipped.
func ParseStats(table []byte, num uint16) (dropped uint64, ok bool) {
	for _, line := range bytes.Split(table, []byte("\n")) {
		f := bytes.Fields(line)
		if len(f) < 7 {
			continue
		}
		q, err := strconv.ParseUint(string(f[0]), 10, 16)
		if err != nil || uint16(q) != num {
			continue
		}
		full, err1 := strconv.ParseUint(string(f[5]), 10, 64)
		user, err2 := strconv.ParseUint(string(f[6]), 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		return full + user, true
	}
	return 0, false
}
