// Package syslog is a minimal writer to the local syslog socket, used by the
// detached gate whose stdio is the null device (docs/gate.md, Logs). Every
// Write is one message "<PRI>terok-gate: <line>".
package syslog

import (
	"bytes"
	"net"
	"strconv"
	"sync"
)

// facility daemon (3) << 3
const facilityDaemon = 3 << 3

// Writer sends slog text lines to syslog.
type Writer struct {
	tag  string
	mu   sync.Mutex
	conn net.Conn
	addr string
}

// Dial connects to the syslog socket at addr (normally /dev/log).
func Dial(addr, tag string) (*Writer, error) {
	c, err := dial(addr)
	if err != nil {
		return nil, err
	}
	return &Writer{tag: tag, conn: c, addr: addr}, nil
}

func dial(addr string) (net.Conn, error) {
	c, err := net.Dial("unixgram", addr)
	if err != nil {
		c, err = net.Dial("unix", addr)
	}
	return c, err
}

// severity maps the slog level of a text or JSON line (level=WARN,
// "level":"WARN") to a syslog severity. Only the first level member counts:
// the handler writes it before the message, so a message that contains
// "level=ERROR" cannot raise its own severity.
func severity(p []byte) int {
	lv := []byte(nil)
	i, j := bytes.Index(p, []byte("level=")), bytes.Index(p, []byte(`"level":"`))
	switch {
	case i >= 0 && (j < 0 || i < j):
		lv = p[i+len("level="):]
	case j >= 0:
		lv = p[j+len(`"level":"`):]
	}
	switch {
	case bytes.HasPrefix(lv, []byte("ERROR")):
		return 3
	case bytes.HasPrefix(lv, []byte("WARN")):
		return 4
	case bytes.HasPrefix(lv, []byte("DEBUG")):
		return 7
	}
	return 6
}

// Write sends p as one message; a lost syslog connection is re-dialled once.
func (w *Writer) Write(p []byte) (int, error) {
	msg := make([]byte, 0, len(p)+len(w.tag)+8)
	msg = append(msg, '<')
	msg = strconv.AppendInt(msg, int64(facilityDaemon|severity(p)), 10)
	msg = append(msg, '>')
	msg = append(msg, w.tag...)
	msg = append(msg, ": "...)
	msg = append(msg, bytes.TrimRight(p, "\n")...)
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, err := w.conn.Write(msg); err != nil {
		c, derr := dial(w.addr)
		if derr != nil {
			return 0, err
		}
		w.conn.Close()
		w.conn = c
		if _, err := w.conn.Write(msg); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Close closes the connection.
func (w *Writer) Close() error { return w.conn.Close() }
